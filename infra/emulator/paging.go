package emulator

import (
	"fmt"
	"html"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// Paging as Dataverse does it (https://learn.microsoft.com/power-apps/developer/data-platform/webapi/query/page-results):
// @odata.nextLink carries $skiptoken=<cookie pagenumber="2" pagingcookie="…" istracking="False" />,
// where the paging cookie, URL-encoded once inside the token, names the first and last row of the
// page by the ordering columns and the primary id:
//
//	<cookie page="1"><accountid last="{AAA19CDD-…}" first="{475B158C-…}" /></cookie>
//
// The next page starts after the last row, so a row deleted between two requests does not make
// the next page skip one. The page size is not in the token: Dataverse asks the client to send the
// same Prefer: odata.maxpagesize with every page, and a client that does not gets up to 5,000 rows
// after the cookie.

// newRowID is the id of a row the emulator creates. Dataverse creates sequential GUIDs, so rows
// ordered by primary key (its default order) come in the order they were created; a version 7
// UUID orders the same way as text.
func newRowID() uuid.UUID { return uuid.Must(uuid.NewV7()) }

// orderKey is one column of a query's order: $orderby's, then the primary id.
type orderKey struct {
	prop string
	desc bool
}

// orderKeys reads $orderby ("a asc,b desc") and ends it with the primary id, which Dataverse
// orders by when $orderby is absent and which makes every order total, as a paging cookie needs.
func orderKeys(ent *Entity, spec string) ([]orderKey, error) {
	var keys []orderKey
	if spec != "" {
		for _, part := range strings.Split(spec, ",") {
			f := strings.Fields(part)
			if len(f) == 0 || len(f) > 2 || (len(f) == 2 && f[1] != "asc" && f[1] != "desc") {
				return nil, fmt.Errorf("invalid $orderby clause %q", part)
			}
			keys = append(keys, orderKey{f[0], len(f) == 2 && f[1] == "desc"})
		}
	}
	for _, k := range keys {
		if k.prop == ent.PrimaryID {
			return keys, nil
		}
	}
	return append(keys, orderKey{prop: ent.PrimaryID}), nil
}

// compareRows orders two rendered rows by keys; rows without a value sort first, as SQL's NULLs do.
func compareRows(keys []orderKey, a, b map[string]any) int {
	for _, k := range keys {
		if c := compareValues(a[k.prop], b[k.prop]); c != 0 {
			if k.desc {
				return -c
			}
			return c
		}
	}
	return 0
}

func sortRows(keys []orderKey, rows []map[string]any) {
	sort.SliceStable(rows, func(i, j int) bool { return compareRows(keys, rows[i], rows[j]) < 0 })
}

// pagingCookie is the cookie of a page that ends with last and starts with first.
func pagingCookie(ent *Entity, keys []orderKey, page int, first, last map[string]any) string {
	var b strings.Builder
	fmt.Fprintf(&b, `<cookie page="%d">`, page)
	for _, k := range keys {
		lv, fv := last[k.prop], first[k.prop]
		if lv == nil { // a null sorts first; leaving the column out reads back as null
			continue
		}
		fmt.Fprintf(&b, `<%s last="%s" first="%s" />`, k.prop, cookieValue(ent, k.prop, lv), cookieValue(ent, k.prop, fv))
	}
	b.WriteString(`</cookie>`)
	return fmt.Sprintf(`<cookie pagenumber="%d" pagingcookie="%s" istracking="False" />`, page+1, cookieEscape(b.String()))
}

// cookieValue writes a value as Dataverse's cookies do: GUIDs upper case in braces.
func cookieValue(ent *Entity, prop string, v any) string {
	if v == nil {
		return ""
	}
	s := fmt.Sprint(v)
	if a, ok := ent.Attributes[prop]; (ok && a.Type == UniqueID) || strings.HasSuffix(prop, "_value") {
		if id, err := uuid.Parse(s); err == nil {
			return "{" + strings.ToUpper(id.String()) + "}"
		}
	}
	return html.EscapeString(s)
}

// cookieEscape percent-encodes every byte but letters, digits and -_. in lower-case hex, as the
// paging cookies Dataverse writes do (%3ccookie%20page%3d%221%22%3e…).
func cookieEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02x", c)
	}
	return b.String()
}

var (
	pagingCookieRE = regexp.MustCompile(`pagingcookie="([^"]*)"`)
	cookieColumnRE = regexp.MustCompile(`<([A-Za-z_][A-Za-z0-9_]*) last="([^"]*)"`)
)

// afterCookie reads a $skiptoken and returns the last row of the previous page as the order's
// columns hold it. A token that is not a paging cookie answers 400.
func afterCookie(ent *Entity, keys []orderKey, token string) (map[string]any, *apiError) {
	m := pagingCookieRE.FindStringSubmatch(token)
	if m == nil {
		return nil, errBadRequest("The $skiptoken is not a paging cookie: " + token)
	}
	inner, err := url.QueryUnescape(m[1])
	if err != nil {
		return nil, errBadRequest("The paging cookie is not valid: " + err.Error())
	}
	last := map[string]any{}
	for _, c := range cookieColumnRE.FindAllStringSubmatch(inner, -1) {
		last[c[1]] = cookieTyped(ent, c[1], html.UnescapeString(c[2]))
	}
	if last[ent.PrimaryID] == nil {
		return nil, errBadRequest("The paging cookie names no " + ent.PrimaryID + ".")
	}
	return last, nil
}

// cookieTyped turns a cookie's text back into the value a rendered row holds.
func cookieTyped(ent *Entity, prop, s string) any {
	if id, err := uuid.Parse(strings.Trim(s, "{}")); err == nil && strings.HasPrefix(s, "{") {
		return id.String()
	}
	switch ent.Attributes[prop].Type {
	case Integer, Picklist, State, Status:
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return n
		}
	case Decimal, Money:
		if f, err := strconv.ParseFloat(s, 64); err == nil {
			return f
		}
	case Boolean:
		return s == "true"
	}
	return s
}

// rowsAfter returns the rows, sorted by keys, that come after last.
func rowsAfter(keys []orderKey, rows []map[string]any, last map[string]any) []map[string]any {
	i := sort.Search(len(rows), func(i int) bool { return compareRows(keys, rows[i], last) > 0 })
	return rows[i:]
}

// nextLinkAfter is the request's URL with token, the paging cookie of the page it answered.
func nextLinkAfter(base string, q url.Values, token string) string {
	q2 := url.Values{}
	for k, v := range q {
		q2[k] = v
	}
	q2.Set("$skiptoken", token)
	return base + "?" + strings.ReplaceAll(q2.Encode(), "+", "%20")
}

// pageNumber is the pagenumber of a $skiptoken: 1 without one.
func pageNumber(token string) int {
	i := strings.Index(token, `pagenumber="`)
	if i < 0 {
		return 1
	}
	n, _ := strconv.Atoi(strings.SplitN(token[i+len(`pagenumber="`):], `"`, 2)[0])
	return max(n, 1)
}
