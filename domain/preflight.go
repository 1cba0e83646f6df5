package domain

import (
	"fmt"
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

// Principal is who Dataverse says the integration user is (WhoAmI), and how it holds its roles.
type Principal struct {
	UserID         string
	BusinessUnitID string
	OrganizationID string
	// Team names the team whose security role gives the user its privileges, when it holds them
	// through a team rather than a role of its own: a missing privilege is added to that role.
	Team string
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
}

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
		Gaps: []PreflightGap{}, Checks: []PreflightCheck{}}
	// check counts one check under its key, and keeps its gap when it has one.
	check := func(key string, gap *Failure) {
		rep.Checked++
		rep.Checks = append(rep.Checks, PreflightCheck{Key: key, OK: gap == nil})
		if gap != nil {
			rep.Gaps = append(rep.Gaps, PreflightGap{Key: key, Failure: gap})
		}
	}
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
	return rep
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
// the exact role change: on the team's role when the user holds its roles through a team.
func MissingPrivilegeGap(p Principal, need PrivilegeNeed, name string) *Failure {
	where := fmt.Sprintf("the security role of the application user %s", p.UserID)
	if p.Team != "" {
		where = fmt.Sprintf("the security role of the team %q the application user %s holds its roles through (not a role of the user)", p.Team, p.UserID)
	}
	return &Failure{
		Class: ClassSetup, Kind: KindMissingPrivilege,
		Message: fmt.Sprintf("The integration user lacks %s (%s on %s), which the %s mapping needs; its records would fail.",
			name, need.Verb, need.Entity, strings.Join(need.Tables, ", ")),
		Resolution: fmt.Sprintf("In the Power Platform admin center, give %s the %s privilege on the %s table at Organization level (%s); the next check clears this error.",
			where, need.Verb, need.Entity, name),
		Details: map[string]string{"entity": need.Entity, "privilege": name, "verb": need.Verb, "user_id": p.UserID,
			"team": p.Team, "tables": strings.Join(need.Tables, ",")},
	}
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
// projector resolves the open preflight errors whose key is not among Gaps and that were last
// seen no later than At, so that an error reported by a later check on another worker stays.
// Its JSON has the table of a RecordSynced and no key, which tells the two apart.
type PreflightChecked struct {
	Table   string    `json:"table"` // always PreflightTable
	Gaps    []string  `json:"gaps"`
	Checked int       `json:"checked"`
	At      time.Time `json:"at"`
}

// Outcome is the report as the message that resolves every preflight error it no longer finds.
func (r PreflightReport) Outcome(at time.Time) PreflightChecked {
	c := PreflightChecked{Table: PreflightTable, Gaps: make([]string, 0, len(r.Gaps)), Checked: r.Checked, At: at}
	for _, g := range r.Gaps {
		c.Gaps = append(c.Gaps, g.Key)
	}
	return c
}
