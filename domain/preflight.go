package domain

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// The preflight asks Dataverse, before the first record fails, whether the setup lets every
// mapping sync: who the integration user is, whether it holds the privileges the mappings need,
// whether every mapped entity and attribute exists with a compatible type and length, and what
// the base currency is. Every gap is a setup failure of the ledger's stage "preflight", under the
// pseudo table PreflightTable and a key naming the gap, so that it resolves by itself when a later
// check no longer finds it.

// PreflightStage is the stage of a preflight error; PreflightTable the table its errors are kept
// under.
const (
	PreflightStage = "preflight"
	PreflightTable = "preflight"
)

// PrivilegeNeed is one privilege a mapping needs, as Dataverse names it (prv<Verb><SchemaName>).
type PrivilegeNeed struct {
	Entity string   // logical name
	Verb   string   // Create, Read, Write, Delete, Append, AppendTo
	Tables []string // the source tables whose mappings need it
}

// Name is the privilege's name for an entity of the given schema name.
func (p PrivilegeNeed) Name(schemaName string) string { return "prv" + p.Verb + schemaName }

// RequiredPrivileges are the privileges the mappings need: Create, Read, Write, Append and
// AppendTo on each mapped entity, Delete where a mapping deletes rows, and AppendTo on the entity
// of every lookup's table. They come sorted by entity, then verb, so that reports are stable.
func RequiredPrivileges(ms Mappings) []PrivilegeNeed {
	need := map[[2]string]map[string]bool{}
	add := func(entity, verb, table string) {
		k := [2]string{entity, verb}
		if need[k] == nil {
			need[k] = map[string]bool{}
		}
		need[k][table] = true
	}
	for _, table := range ms.Tables() {
		m := ms[table]
		for _, v := range []string{"Create", "Read", "Write", "Append", "AppendTo"} {
			add(m.Entity, v, table)
		}
		if m.OnDelete == DeleteRow {
			add(m.Entity, "Delete", table)
		}
		for _, l := range m.Lookups {
			if target, ok := ms[l.Table]; ok {
				add(target.Entity, "AppendTo", table)
			}
		}
	}
	verbOrder := map[string]int{"Create": 0, "Read": 1, "Write": 2, "Delete": 3, "Append": 4, "AppendTo": 5}
	out := make([]PrivilegeNeed, 0, len(need))
	for k, tables := range need {
		p := PrivilegeNeed{Entity: k[0], Verb: k[1]}
		for t := range tables {
			p.Tables = append(p.Tables, t)
		}
		sort.Strings(p.Tables)
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Entity != out[j].Entity {
			return out[i].Entity < out[j].Entity
		}
		return verbOrder[out[i].Verb] < verbOrder[out[j].Verb]
	})
	return out
}

// Principal is who Dataverse says the integration user is (WhoAmI), and how it holds its roles:
// its own (systemuserroles_association) and those of the teams it belongs to
// (teammembership_association, teamroles_association).
type Principal struct {
	UserID         string `json:"userId"`
	BusinessUnitID string `json:"businessUnitId"`
	OrganizationID string `json:"organizationId"`
	Roles          []Role `json:"roles,omitempty"`
	Teams          []Team `json:"teams,omitempty"`
	// RolesUnknown says the roles and teams could not be read (the user lacks prvReadRole or
	// prvReadTeam): a resolution then names no role or team.
	RolesUnknown bool `json:"rolesUnknown,omitempty"`
}

// Role is a security role. A predefined one (it has a role template: System Administrator,
// Basic User, …) is never advised to be widened: every user who holds it would gain the privilege.
type Role struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	Predefined bool   `json:"predefined,omitempty"`
}

// Team types, as Dataverse's team.teamtype has them.
const (
	TeamOwner       = 0
	TeamAccess      = 1 // shares rows; it cannot hold a security role
	TeamEntraGroup  = 2 // a Microsoft Entra ID security group team
	TeamOfficeGroup = 3 // a Microsoft Entra ID Office group team
)

// Team is a team the user belongs to, with its roles. A business unit's default team (Default)
// holds every user of the business unit: a role added to it reaches them all.
type Team struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Type    int    `json:"type"`
	Default bool   `json:"default,omitempty"`
	Roles   []Role `json:"roles,omitempty"`
	// Privileges are those its roles give (RetrieveTeamPrivileges); members inherit them.
	Privileges map[string]bool `json:"-"`
}

// holdsRoles reports whether a team can hold roles and would be advised to: an access team
// cannot, and a default team reaches every user of its business unit.
func (t Team) holdsRoles() bool { return t.Type != TeamAccess && !t.Default }

// roleSource is where a privilege the user lacks should be added: the team its privileges come
// from when it holds none through a custom role of its own, else the user.
func (p Principal) roleSource() *Team {
	for _, r := range p.Roles {
		if !r.Predefined {
			return nil
		}
	}
	var best *Team
	for i := range p.Teams {
		t := &p.Teams[i]
		if !t.holdsRoles() || len(t.Roles) == 0 {
			continue
		}
		if best == nil || len(t.Privileges) > len(best.Privileges) {
			best = t
		}
	}
	return best
}

// customRole is the first role that is not predefined, nil when there is none.
func customRole(rs []Role) *Role {
	for i := range rs {
		if !rs[i].Predefined {
			return &rs[i]
		}
	}
	return nil
}

func roleNames(rs []Role) string {
	names := make([]string, 0, len(rs))
	for _, r := range rs {
		names = append(names, fmt.Sprintf("%q", r.Name))
	}
	return strings.Join(names, ", ")
}

// EntityInfo is what Dataverse's metadata says about one mapped entity; nil Attributes with
// Exists false means the entity is not there.
type EntityInfo struct {
	Exists     bool
	SchemaName string
	Attributes map[string]AttributeInfo
}

// AttributeInfo is one attribute's metadata: AttributeType (String, Integer, Lookup, …), and
// MaxLength for strings.
type AttributeInfo struct {
	Type      string
	MaxLength int
	Targets   []string
}

// PreflightInput is what a preflight gathered from Dataverse.
type PreflightInput struct {
	Principal  Principal
	Privileges map[string]bool       // privilege names the user holds (RetrieveUserPrivileges)
	Entities   map[string]EntityInfo // by logical name
	// BaseCurrency is the ISO code of the environment's base currency, empty when unknown.
	BaseCurrency string
	// LocalCurrency is the source's local currency (DVSYNC_LOCAL_CURRENCY; Business Central's
	// LCY), empty when not configured: then the base currency is not compared.
	LocalCurrency string
	// Coupled are the Dataverse currencies the source's currency records are coupled to; nil with
	// CoupledSkipped saying why when the ledger could not be read (that part is skipped, not failed).
	Coupled        []CoupledCurrency
	CoupledSkipped string
	// Warnings are what the check could not learn and went on without (logged, and printed by
	// `dvsync doctor`), e.g. the roles when the user may not read them.
	Warnings []string
}

// CoupledCurrency is one coupled currency record and what Dataverse holds of its row.
type CoupledCurrency struct {
	Table, Key string // the source record
	RowID      string
	Code       string // isocurrencycode
	Found      bool   // the row exists (a deleted row is a destination_deleted error of its records)
	Active     bool   // statecode 0
}

// CurrencyEntity is the Dataverse table of currencies; a mapping to it is the currency mapping.
const CurrencyEntity = "transactioncurrency"

// PreflightGap is one thing the setup lacks: a setup failure and the key it is kept under.
type PreflightGap struct {
	Key     string // e.g. "account/prvWriteAccount", "account.name"
	Failure *Failure
}

// PreflightReport is the outcome of one preflight.
type PreflightReport struct {
	Principal    Principal      `json:"principal"`
	BaseCurrency string         `json:"baseCurrency,omitempty"`
	Checked      int            `json:"checked"` // privileges and attributes checked
	Gaps         []PreflightGap `json:"gaps"`
	// Checks are every check in the order made, passed or not, for `dvsync doctor` to print.
	Checks   []PreflightCheck `json:"checks"`
	Required []PrivilegeNeed  `json:"-"`
	// Skipped are the parts not checked, with why: their gaps are neither found nor resolved.
	Skipped  []string `json:"skipped,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
}

// PreflightCheck is one thing a preflight checked, under the key a gap of it has.
type PreflightCheck struct {
	Key string `json:"key"`
	OK  bool   `json:"ok"`
}

// OK reports whether the preflight found no gap.
func (r PreflightReport) OK() bool { return len(r.Gaps) == 0 }

// compatible are the attribute types a source field of each type may be written to.
var compatible = map[FieldType][]string{
	TypeString:  {"String", "Memo"},
	TypeNumber:  {"Decimal", "Money", "Double", "Integer", "BigInt"},
	TypeInteger: {"Integer", "BigInt", "Picklist", "State", "Status", "Decimal", "Money", "Double"},
	TypeBoolean: {"Boolean"},
}

// minStringLength is the least MaxLength a mapped string attribute may have: shorter, and every
// record with a longer value fails.
const minStringLength = 1

// Preflight compares what the mappings need with what Dataverse holds. It is pure: the caller
// gathers the input (infra/dataverse) and publishes the gaps.
func Preflight(ms Mappings, in PreflightInput) PreflightReport {
	rep := PreflightReport{Principal: in.Principal, BaseCurrency: in.BaseCurrency, Required: RequiredPrivileges(ms),
		Gaps: []PreflightGap{}, Checks: []PreflightCheck{}, Warnings: in.Warnings}
	// check counts one check under its key, and keeps its gap when it has one.
	check := func(key string, gap *Failure) {
		rep.Checked++
		rep.Checks = append(rep.Checks, PreflightCheck{Key: key, OK: gap == nil})
		if gap != nil {
			rep.Gaps = append(rep.Gaps, PreflightGap{Key: key, Failure: gap})
		}
	}
	// Dataverse answered, so the application is not restricted from the API.
	check(ApplicationKey, nil)
	for _, table := range ms.Tables() {
		m := ms[table]
		info, ok := in.Entities[m.Entity]
		if !ok || !info.Exists {
			check(m.Entity, missingEntity(m))
			continue
		}
		check(m.Entity, nil)
		for _, f := range m.Fields {
			check(m.Entity+"."+f.Attribute, checkAttribute(m, info, f.Attribute, f.Type))
		}
		for _, l := range m.Lookups {
			var gap *Failure
			if !hasLookup(info, l.Bind) {
				gap = missingAttribute(m, l.Bind)
			}
			check(m.Entity+"."+l.Bind, gap)
		}
	}
	for _, p := range rep.Required {
		info, ok := in.Entities[p.Entity]
		if !ok || !info.Exists {
			continue // reported as a missing entity
		}
		name := p.Name(info.SchemaName)
		var gap *Failure
		if !in.Privileges[name] {
			gap = MissingPrivilegeGap(in.Principal, p, name)
		}
		check(p.Entity+"/"+name, gap)
	}
	checkCurrencies(ms, in, &rep, check)
	return rep
}

// CurrencyBaseKey is the key of the gap of a local currency that is not the base currency;
// a coupled currency's gap is "currency/<key>".
const CurrencyBaseKey = "currency/base"

// checkCurrencies checks whether the source's currencies can couple to Dataverse's: the local
// currency is the base currency (when configured and Dataverse says which it is), and every
// coupled currency's row is active.
func checkCurrencies(ms Mappings, in PreflightInput, rep *PreflightReport, check func(string, *Failure)) {
	if in.LocalCurrency != "" && in.BaseCurrency != "" {
		var gap *Failure
		if !strings.EqualFold(in.LocalCurrency, in.BaseCurrency) {
			gap = &Failure{
				Class: ClassSetup, Kind: KindCurrencySetup,
				Message: fmt.Sprintf("The source's local currency (DVSYNC_LOCAL_CURRENCY) is %s, but Dataverse's base currency is %s: "+
					"Dataverse reports every amount in %s, and dvsync does not convert the amounts the source keeps in its local "+
					"currency (a customer's credit limit in LCY, say).", in.LocalCurrency, in.BaseCurrency, in.BaseCurrency),
				Resolution: fmt.Sprintf("Dataverse's base currency cannot be changed once the environment is provisioned: sync to an "+
					"environment provisioned with %s as its base currency, or, if the source's local currency is in fact %s, set "+
					"DVSYNC_LOCAL_CURRENCY=%s; the next check clears this error.", in.LocalCurrency, in.BaseCurrency, in.BaseCurrency),
				Details: map[string]string{"entity": CurrencyEntity, "local_currency": in.LocalCurrency, "base_currency": in.BaseCurrency, "problem": "base_currency"},
			}
		}
		check(CurrencyBaseKey, gap)
	}
	if in.CoupledSkipped != "" {
		rep.Skipped = append(rep.Skipped, "coupled currencies: "+in.CoupledSkipped)
		return
	}
	if in.LocalCurrency != "" && !slices.ContainsFunc(in.Coupled, func(c CoupledCurrency) bool { return strings.EqualFold(c.Key, in.LocalCurrency) }) {
		// Not a gap: Business Central keeps LCY in its setup, and may never publish a currency record of it.
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("No currency record of the local currency %s is coupled: a blank currency code "+
			"binds Dataverse's currency with the ISO code %s, looked up in Dataverse (and a record fails dependency_not_coupled "+
			"if there is none).", in.LocalCurrency, in.LocalCurrency))
	}
	for _, c := range in.Coupled {
		if !c.Found {
			continue
		}
		var gap *Failure
		if !c.Active {
			gap = &Failure{
				Class: ClassSetup, Kind: KindCurrencySetup,
				Message: fmt.Sprintf("The %s record %s is coupled to the Dataverse currency %s (%s), which is inactive: "+
					"records in that currency would fail.", c.Table, c.Key, c.Code, c.RowID),
				Resolution: fmt.Sprintf("In Dataverse, activate the currency %s (Settings > Currencies), or uncouple the %s record %s "+
					"so that it couples to an active currency; the next check clears this error.", c.Code, c.Table, c.Key),
				Details: map[string]string{"entity": CurrencyEntity, "table": c.Table, "key": c.Key, "row_id": c.RowID, "problem": "inactive_currency"},
			}
		}
		check("currency/"+c.Key, gap)
	}
}

// CurrencyTable is the source table mapped to Dataverse's currencies, "" when none is.
func (ms Mappings) CurrencyTable() string {
	for _, t := range ms.Tables() {
		if ms[t].Entity == CurrencyEntity {
			return t
		}
	}
	return ""
}

// hasLookup reports whether the entity has the lookup a navigation property sets: a polymorphic
// lookup's navigation is <attribute>_<target>.
func hasLookup(info EntityInfo, nav string) bool {
	if a, ok := info.Attributes[nav]; ok {
		return a.Type == "Lookup" || a.Type == "Customer" || a.Type == "Owner"
	}
	if i := strings.LastIndex(nav, "_"); i > 0 {
		a, ok := info.Attributes[nav[:i]]
		return ok && (a.Type == "Customer" || a.Type == "Lookup")
	}
	return false
}

// checkAttribute is the gap of one mapped attribute, nil when it has none.
func checkAttribute(m Mapping, info EntityInfo, attr string, t FieldType) *Failure {
	a, ok := info.Attributes[attr]
	if !ok {
		return missingAttribute(m, attr)
	}
	for _, c := range compatible[t] {
		if a.Type == c {
			if (c == "String" || c == "Memo") && a.MaxLength < minStringLength {
				break
			}
			return nil
		}
	}
	return &Failure{
		Class: ClassSetup, Kind: KindSchemaMismatch,
		Message: fmt.Sprintf("The %s mapping writes its %s values to %s.%s, which is of type %s (max length %d) in Dataverse.",
			m.Table, t, m.Entity, attr, a.Type, a.MaxLength),
		Resolution: fmt.Sprintf("Map the field to a %s column of %s, or change the column's type in Dataverse; the next check clears this error.",
			strings.Join(compatible[t], " or "), m.Entity),
		Details: map[string]string{"entity": m.Entity, "attribute": attr, "attribute_type": a.Type, "field_type": string(t), "problem": "type"},
	}
}

func missingEntity(m Mapping) *Failure {
	return &Failure{
		Class: ClassSetup, Kind: KindSchemaMismatch,
		Message:    fmt.Sprintf("The %s mapping writes to the table %s, which does not exist in Dataverse.", m.Table, m.Entity),
		Resolution: fmt.Sprintf("Create the table %s in Dataverse (or import the solution that has it), or correct the mapping's entity; the next check clears this error.", m.Entity),
		Details:    map[string]string{"entity": m.Entity, "table": m.Table, "problem": "missing_table"},
	}
}

func missingAttribute(m Mapping, attr string) *Failure {
	return &Failure{
		Class: ClassSetup, Kind: KindSchemaMismatch,
		Message:    fmt.Sprintf("The %s mapping writes to %s.%s, which does not exist in Dataverse.", m.Table, m.Entity, attr),
		Resolution: fmt.Sprintf("Add the column %s to the table %s in Dataverse, or correct the mapping; the next check clears this error.", attr, m.Entity),
		Details:    map[string]string{"entity": m.Entity, "attribute": attr, "table": m.Table, "problem": "missing_column"},
	}
}

// MissingPrivilegeGap is the setup failure of a privilege the user lacks. Its resolution names
// the exact role change: to the role of the team the user's privileges come from when it holds
// them through a team (members inherit a team role's privileges), else to the user's own role;
// a custom role, never a predefined one that others hold too. When the roles could not be read it
// names neither.
func MissingPrivilegeGap(p Principal, need PrivilegeNeed, name string) *Failure {
	priv := fmt.Sprintf("the %s privilege on the %s table (%s)", need.Verb, need.Entity, name)
	details := map[string]string{"entity": need.Entity, "privilege": name, "verb": need.Verb, "user_id": p.UserID,
		"tables": strings.Join(need.Tables, ",")}
	var change string
	switch team := p.roleSource(); {
	case p.RolesUnknown:
		change = fmt.Sprintf("give the application user %s %s at Organization level, in a custom security role it holds "+
			"(its own, or one of an owner team it belongs to; its roles could not be read to say which)", p.UserID, priv)
	case team != nil:
		details["team"], details["team_id"] = team.Name, team.ID
		if r := customRole(team.Roles); r != nil {
			details["role"] = r.Name
			change = fmt.Sprintf("add %s at Organization level to the role %q of the team %q "+
				"(the application user %s's privileges come from that team, not from a role of the user)", priv, r.Name, team.Name, p.UserID)
		} else {
			change = fmt.Sprintf("add a custom security role with %s at Organization level to the team %q "+
				"(the application user %s's privileges come from that team, not from a role of the user); "+
				"do not widen its predefined roles %s, which other users hold too", priv, team.Name, p.UserID, roleNames(team.Roles))
		}
	default:
		if r := customRole(p.Roles); r != nil {
			details["role"] = r.Name
			change = fmt.Sprintf("add %s at Organization level to the role %q of the application user %s", priv, r.Name, p.UserID)
		} else {
			change = fmt.Sprintf("assign the application user %s a custom security role with %s at Organization level", p.UserID, priv)
			if len(p.Roles) > 0 {
				change += fmt.Sprintf("; do not widen its predefined roles %s, which other users hold too", roleNames(p.Roles))
			}
		}
	}
	return &Failure{
		Class: ClassSetup, Kind: KindMissingPrivilege,
		Message: fmt.Sprintf("The integration user lacks %s (%s on %s), which the %s mapping needs; its records would fail.",
			name, need.Verb, need.Entity, strings.Join(need.Tables, ", ")),
		Resolution: fmt.Sprintf("In the Power Platform admin center, %s; the next check clears this error.", change),
		Details:    details,
	}
}

// ApplicationKey is the key of the gap of an application restricted from the Dataverse API.
const ApplicationKey = "application"

// AppRestrictedReport is the report of a check that found the application restricted from the
// API: no other check can run, so it checked that alone.
func AppRestrictedReport(dv *DataverseError) PreflightReport {
	return PreflightReport{Gaps: []PreflightGap{{Key: ApplicationKey, Failure: AppRestricted(dv)}}, Checked: 1,
		Checks: []PreflightCheck{{Key: ApplicationKey}}}
}

// AppRestricted is the setup failure of an application an administrator restricted from the
// Dataverse API (0x80095ffc): no privilege is missing and no role change helps.
func AppRestricted(dv *DataverseError) *Failure {
	return &Failure{
		Class: ClassSetup, Kind: KindAppRestricted,
		Message: "An administrator has restricted this application from the Dataverse API; every request is refused.",
		Resolution: "Ask the Power Platform administrator to lift the restriction on the application's id for this environment " +
			"(it is not a missing privilege: changing roles does not help); the next check clears this error.",
		Dataverse: dv,
	}
}

// ErrorEvents are the report's gaps as error events of stage preflight, under PreflightTable.
func (r PreflightReport) ErrorEvents(id func(key string) string) []ErrorEvent {
	out := make([]ErrorEvent, 0, len(r.Gaps))
	for _, g := range r.Gaps {
		out = append(out, ErrorEvent{ID: id(g.Key), Failure: *g.Failure, Table: PreflightTable, Key: g.Key,
			Entity: g.Failure.Details["entity"], Stage: PreflightStage})
	}
	return out
}

// PreflightChecked is published to dvsync.errors.resolved.preflight after a check's gaps: the
// projector resolves the open preflight errors whose key is among Keys (what the check looked
// at) but not among Gaps, and that were last seen no later than At, so that an error reported by
// a later check on another worker stays, and a partial check resolves nothing it did not check.
// Its JSON has the table of a RecordSynced and no key, which tells the two apart.
type PreflightChecked struct {
	Table   string    `json:"table"` // always PreflightTable
	Gaps    []string  `json:"gaps"`
	Keys    []string  `json:"keys"`
	Checked int       `json:"checked"`
	At      time.Time `json:"at"`
}

// Outcome is the report as the message that resolves every preflight error it no longer finds.
func (r PreflightReport) Outcome(at time.Time) PreflightChecked {
	c := PreflightChecked{Table: PreflightTable, Gaps: make([]string, 0, len(r.Gaps)), Keys: make([]string, 0, len(r.Checks)),
		Checked: r.Checked, At: at}
	for _, g := range r.Gaps {
		c.Gaps = append(c.Gaps, g.Key)
	}
	seen := map[string]bool{}
	for _, k := range r.Checks {
		if !seen[k.Key] {
			seen[k.Key] = true
			c.Keys = append(c.Keys, k.Key)
		}
	}
	return c
}
