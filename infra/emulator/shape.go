package emulator

import (
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// The shape of the rows a query returns: $select, $expand of single-valued navigation properties,
// and the annotations Prefer: odata.include-annotations asks for. As in Dataverse, a query option
// naming a property the type does not have fails in the OData layer with 400, code 0x0 and
// "Could not find a property named '<name>' on type 'Microsoft.Dynamics.CRM.<entity>'."
//
// https://learn.microsoft.com/power-apps/developer/data-platform/webapi/query/select-columns
// https://learn.microsoft.com/power-apps/developer/data-platform/webapi/query/join-tables
// https://learn.microsoft.com/power-apps/developer/data-platform/webapi/compose-http-requests-handle-errors
// https://learn.microsoft.com/power-apps/developer/data-platform/webapi/query/select-columns#formatted-values

// Annotations Dataverse puts on row properties.
const (
	formattedValue       = "OData.Community.Display.V1.FormattedValue"
	lookupLogicalName    = "Microsoft.Dynamics.CRM.lookuplogicalname"
	associatedNavigation = "Microsoft.Dynamics.CRM.associatednavigationproperty"
)

// shape is what a request asks of the rows: the columns ($select; nil is every column), the
// expanded lookups and the annotations.
type shape struct {
	sel         []string
	expand      []expansion
	annotations []string // the patterns of odata.include-annotations; nil is none
}

// expansion is one $expand item: a single-valued navigation property with its own options.
type expansion struct {
	nav Navigation
	sub shape
}

// shapeOf reads a request's $select and $expand against ent.
func (e *Emulator) shapeOf(r *http.Request, ent *Entity) (shape, *apiError) {
	q := odataQuery(r)
	sh, err := e.parseShape(ent, q.Get("$select"), q.Get("$expand"))
	if err != nil {
		return sh, err
	}
	sh.annotations = includeAnnotations(r)
	return sh, nil
}

func (e *Emulator) parseShape(ent *Entity, sel, expand string) (shape, *apiError) {
	var sh shape
	if sel != "" {
		for _, s := range strings.Split(sel, ",") {
			s = strings.TrimSpace(s)
			if _, isNav := ent.Navigations[s]; !isNav && !isProperty(ent, s) {
				return sh, errNoProperty(ent, s)
			}
			sh.sel = append(sh.sel, s)
		}
	}
	if expand == "" {
		return sh, nil
	}
	for _, item := range splitOutsideParens(expand, ',') {
		item = strings.TrimSpace(item)
		name, opts, _ := strings.Cut(item, "(")
		nav, ok := ent.Navigations[name]
		if !ok {
			// Collection-valued navigation properties are not emulated either.
			return sh, errNoProperty(ent, name)
		}
		var subSel, subExpand string
		if opts != "" {
			opts = strings.TrimSuffix(opts, ")")
			for _, o := range splitOutsideParens(opts, ';') {
				k, v, _ := strings.Cut(strings.TrimSpace(o), "=")
				switch k {
				case "$select":
					subSel = v
				case "$expand":
					subExpand = v
				default:
					// $filter, $orderby and $top apply to collection-valued properties only.
					return sh, errBadRequest(fmt.Sprintf("The query option '%s' is not allowed in the $expand of the single-valued navigation property '%s'.", k, name))
				}
			}
		}
		sub, err := e.parseShape(e.entities[nav.Target], subSel, subExpand)
		if err != nil {
			return sh, err
		}
		sh.expand = append(sh.expand, expansion{nav: nav, sub: sub})
	}
	return sh, nil
}

// isProperty reports whether name is a structural property of ent as the Web API names them: a
// column, or _<lookup>_value for a lookup.
func isProperty(ent *Entity, name string) bool {
	if a, ok := ent.Attributes[name]; ok {
		return a.Type != Lookup
	}
	if attr, ok := strings.CutPrefix(name, "_"); ok {
		if attr, ok = strings.CutSuffix(attr, "_value"); ok {
			return ent.Attributes[attr].Type == Lookup
		}
	}
	return false
}

// checkFilter fails for the first property a $filter names that ent does not have.
func checkFilter(ent *Entity, f filter) *apiError {
	switch f := f.(type) {
	case cmp:
		if !isProperty(ent, f.prop) {
			return errNoProperty(ent, f.prop)
		}
	case strFunc:
		if !isProperty(ent, f.prop) {
			return errNoProperty(ent, f.prop)
		}
	case logical:
		if err := checkFilter(ent, f.left); err != nil {
			return err
		}
		return checkFilter(ent, f.right)
	case not:
		return checkFilter(ent, f.inner)
	}
	return nil
}

// checkOrder fails for the first $orderby property ent does not have.
func checkOrder(ent *Entity, keys []orderKey) *apiError {
	for _, k := range keys {
		if !isProperty(ent, k.prop) {
			return errNoProperty(ent, k.prop)
		}
	}
	return nil
}

// splitOutsideParens splits s at sep where sep is not inside parentheses or quotes.
func splitOutsideParens(s string, sep byte) []string {
	var parts []string
	depth, inQuote, start := 0, false, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\'':
			inQuote = !inQuote
		case inQuote:
		case c == '(':
			depth++
		case c == ')':
			depth--
		case c == sep && depth == 0:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

// contextSelection is the part of @odata.context that names the selection: (name,primarycontactid(fullname)).
func (sh shape) contextSelection() string {
	if sh.sel == nil && sh.expand == nil {
		return ""
	}
	parts := append([]string(nil), sh.sel...)
	for _, x := range sh.expand {
		parts = append(parts, x.nav.Name+x.sub.contextSelection())
	}
	if sh.sel == nil {
		parts = append([]string{"*"}, parts...)
	}
	return "(" + strings.Join(parts, ",") + ")"
}

// shapeRow renders a stored row with the request's columns, expansions and annotations.
func (e *Emulator) shapeRow(ent *Entity, raw row, sh shape) map[string]any {
	out := render(ent, raw, sh.sel)
	for _, x := range sh.expand {
		target := e.entities[x.nav.Target]
		id := refID(raw[x.nav.Attribute])
		if related, ok := e.rows[target.LogicalName][id]; ok {
			out[x.nav.Name] = e.shapeRow(target, related, shape{sel: x.sub.sel, expand: x.sub.expand, annotations: sh.annotations})
		} else {
			out[x.nav.Name] = nil // a lookup without a value, or to another target of a polymorphic one
		}
	}
	if sh.annotations != nil {
		e.annotate(ent, raw, out, sh.annotations)
	}
	return out
}

// includeAnnotations reads Prefer: odata.include-annotations="…": "*", names, or "namespace.*"
// patterns, comma-separated. nil means the request asks for none.
func includeAnnotations(r *http.Request) []string {
	prefer := strings.Join(r.Header.Values("Prefer"), ",")
	_, v, ok := strings.Cut(prefer, "odata.include-annotations=")
	if !ok {
		return nil
	}
	if strings.HasPrefix(v, `"`) {
		v, _, _ = strings.Cut(v[1:], `"`)
	} else {
		v, _, _ = strings.Cut(v, ",")
	}
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	if out == nil {
		return []string{}
	}
	return out
}

// annotationsApplied is the Preference-Applied value for the annotations a request asked for.
func annotationsApplied(patterns []string) string {
	return `odata.include-annotations="` + strings.Join(patterns, ",") + `"`
}

func wanted(patterns []string, term string) bool {
	for _, p := range patterns {
		if p == "*" || strings.EqualFold(p, term) {
			return true
		}
		if ns, ok := strings.CutSuffix(p, ".*"); ok && strings.HasPrefix(term, ns+".") {
			return true
		}
	}
	return false
}

// annotate adds the annotations Dataverse puts on a row's properties: the formatted value of
// option sets, money, dates, numbers, booleans and lookups, and the target table and navigation
// property of lookups.
func (e *Emulator) annotate(ent *Entity, raw row, out map[string]any, patterns []string) {
	set := func(prop, term string, v any) {
		if wanted(patterns, term) {
			out[prop+"@"+term] = v
		}
	}
	for prop, v := range out {
		if v == nil || strings.HasPrefix(prop, "@") || strings.Contains(prop, "@") {
			continue
		}
		if attr, ok := strings.CutPrefix(prop, "_"); ok {
			if attr, ok = strings.CutSuffix(attr, "_value"); ok && ent.Attributes[attr].Type == Lookup {
				nav, target, name := e.lookupTarget(ent, attr, raw[attr])
				if target == nil {
					continue
				}
				if name != nil {
					set(prop, formattedValue, name)
				}
				set(prop, associatedNavigation, nav)
				set(prop, lookupLogicalName, target.LogicalName)
				continue
			}
		}
		a, ok := ent.Attributes[prop]
		if !ok {
			continue
		}
		if s, ok := e.formatted(ent, a, raw, v); ok {
			set(prop, formattedValue, s)
		}
	}
}

// lookupTarget finds the row a lookup points to: its navigation property, table and primary name.
func (e *Emulator) lookupTarget(ent *Entity, attr string, v any) (string, *Entity, any) {
	id := refID(v)
	names := make([]string, 0, 2)
	for name, n := range ent.Navigations {
		if n.Attribute == attr {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		target := e.entities[ent.Navigations[name].Target]
		if r, ok := e.rows[target.LogicalName][id]; ok {
			return name, target, r[target.PrimaryName]
		}
	}
	return "", nil, nil
}

// defaultLabels are the labels of the state and status options every table has.
var defaultLabels = map[string]map[int]string{
	"statecode":  {0: "Active", 1: "Inactive"},
	"statuscode": {1: "Active", 2: "Inactive"},
}

// formatted is a value as Dataverse formats it for a user with the en-US locale in UTC.
func (e *Emulator) formatted(ent *Entity, a Attribute, raw row, v any) (string, bool) {
	switch a.Type {
	case Picklist, State, Status:
		n, _ := v.(int64)
		if l, ok := a.Labels[int(n)]; ok {
			return l, true
		}
		if l, ok := defaultLabels[a.Name][int(n)]; ok {
			return l, true
		}
		return strconv.FormatInt(n, 10), true
	case Boolean:
		if v == true {
			return "Yes", true
		}
		return "No", true
	case Money:
		f, _ := toFloat(v)
		symbol, precision := e.currencyOf(raw)
		sign := ""
		if f < 0 {
			sign, f = "-", -f
		}
		return sign + symbol + groupThousands(strconv.FormatFloat(f, 'f', precision, 64)), true
	case Integer:
		if a.Name == "versionnumber" {
			return "", false
		}
		n, _ := toFloat(v)
		return groupThousands(strconv.FormatFloat(n, 'f', 0, 64)), true
	case DateTime:
		t, err := time.Parse(time.RFC3339, fmt.Sprint(v))
		if err != nil {
			return "", false
		}
		return t.UTC().Format("1/2/2006 3:04 PM"), true
	}
	return "", false
}

// currencyOf is the symbol and precision of a row's currency, the base currency's when it has none.
func (e *Emulator) currencyOf(raw row) (string, int) {
	id := refID(raw["transactioncurrencyid"])
	if id == uuid.Nil {
		id = e.baseCurrencyID
	}
	cur, ok := e.rows["transactioncurrency"][id]
	if !ok {
		return "", 2
	}
	symbol, _ := cur["currencysymbol"].(string)
	precision := 2
	if p, ok := cur["currencyprecision"].(int64); ok && p >= 0 && p <= 10 {
		precision = int(p)
	}
	return symbol, precision
}

// groupThousands puts commas between groups of three digits of a non-negative decimal number.
func groupThousands(s string) string {
	whole, frac, hasFrac := strings.Cut(s, ".")
	neg := strings.HasPrefix(whole, "-")
	whole = strings.TrimPrefix(whole, "-")
	var b strings.Builder
	for i, c := range whole {
		if i > 0 && (len(whole)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	out := b.String()
	if neg {
		out = "-" + out
	}
	if hasFrac {
		out += "." + frac
	}
	return out
}

// refID is the row id a stored lookup holds: a uuid.UUID once written through the API, text when
// loaded from a file.
func refID(v any) uuid.UUID {
	switch v := v.(type) {
	case uuid.UUID:
		return v
	case string:
		id, _ := uuid.Parse(v)
		return id
	}
	return uuid.Nil
}

// fullName computes a contact's fullname from its name parts, as Dataverse does with the
// default "First Last" format (Dataverse computes the column; a written value does not stay).
func fullName(r row) {
	var parts []string
	for _, k := range []string{"firstname", "middlename", "lastname"} {
		if s, _ := r[k].(string); s != "" {
			parts = append(parts, s)
		}
	}
	if len(parts) > 0 {
		r["fullname"] = strings.Join(parts, " ")
	} else {
		delete(r, "fullname")
	}
}

// defaultCurrency gives a row holding a money value the base currency when it names none, as
// Dataverse does (it takes the user's currency, which the emulator's users do not set).
// https://learn.microsoft.com/power-apps/developer/data-platform/transaction-currency-currency-entity
func (e *Emulator) defaultCurrency(ent *Entity, r row) {
	if ent.Attributes["transactioncurrencyid"].Type != Lookup || r["transactioncurrencyid"] != nil {
		return
	}
	if _, ok := e.rows["transactioncurrency"][e.baseCurrencyID]; !ok {
		return
	}
	for k, v := range r {
		if v != nil && ent.Attributes[k].Type == Money {
			r["transactioncurrencyid"] = e.baseCurrencyID
			return
		}
	}
}

func wantsRepresentation(r *http.Request) bool {
	return strings.Contains(strings.Join(r.Header.Values("Prefer"), ","), "return=representation")
}

// checkRepresentation fails a write whose $select or $expand for the returned row names an
// unknown property before anything is written, as the OData layer reads the URL first.
func (e *Emulator) checkRepresentation(r *http.Request, ent *Entity) *apiError {
	if !wantsRepresentation(r) {
		return nil
	}
	_, err := e.shapeOf(r, ent)
	return err
}

// odataQuery reads a URL's query options. OData separates the options of an $expand item with
// ';' (…$expand=primarycontactid($select=fullname;$expand=…)), which url.ParseQuery refuses as a
// separator and drops the whole option for, so only '&' separates here.
func odataQuery(r *http.Request) url.Values {
	q := url.Values{}
	for _, kv := range strings.Split(r.URL.RawQuery, "&") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		k, err1 := url.QueryUnescape(k)
		v, err2 := url.QueryUnescape(v)
		if err1 != nil || err2 != nil {
			continue
		}
		q.Add(k, v)
	}
	return q
}
