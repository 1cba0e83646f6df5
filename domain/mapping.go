package domain

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strings"

	"github.com/google/uuid"
)

// FieldType is the JSON type a mapped source field must have in an event.
type FieldType string

const (
	TypeString  FieldType = "string"
	TypeNumber  FieldType = "number"
	TypeInteger FieldType = "integer"
	TypeBoolean FieldType = "boolean"
)

// DeletePolicy says what a delete event of a coupled record does in Dataverse.
type DeletePolicy string

const (
	DeleteRow        DeletePolicy = "delete"     // delete the Dataverse row
	DeleteDeactivate DeletePolicy = "deactivate" // set the row inactive
	DeleteUncouple   DeletePolicy = "uncouple"   // leave the row, remove the coupling
	DeleteReport     DeletePolicy = "report"     // coupling error source_deleted
)

// ConflictPolicy says what happens when the coupled Dataverse row was deleted there
// (Business Central's "Resolve Deletion Conflicts").
type ConflictPolicy string

const (
	ConflictReport   ConflictPolicy = "report"   // coupling error destination_deleted
	ConflictRestore  ConflictPolicy = "restore"  // re-create the row and couple it again
	ConflictUncouple ConflictPolicy = "uncouple" // remove the coupling
)

// FieldMapping copies one source field to one Dataverse attribute.
type FieldMapping struct {
	Source    string    `json:"source"`
	Attribute string    `json:"attribute"`
	Type      FieldType `json:"type"`
	// Match, when set, makes the field a criterion of match-based coupling (Business Central's
	// "Use For Match-Based Coupling").
	Match *FieldMatch `json:"match,omitempty"`
}

// Lookup writes a field that references another table as a Dataverse lookup to the row coupled
// to that record. Without Query the lookup binds the dependency's own row; with Query it binds
// the first row of Query.EntitySet matching Query.Filter, where {rowId} stands for the
// dependency's row id (a product's default unit is the base unit of its unit group).
type Lookup struct {
	Source  string       `json:"source"`
	Table   string       `json:"table"`
	Bind    string       `json:"bind"` // navigation property, e.g. transactioncurrencyid
	Caption string       `json:"caption,omitempty"`
	Query   *LookupQuery `json:"query,omitempty"`
}

// LookupQuery finds the row a lookup binds among rows related to the dependency's row.
type LookupQuery struct {
	EntitySet   string `json:"entitySet"`
	IDAttribute string `json:"idAttribute"`
	Filter      string `json:"filter"`
}

func (l Lookup) caption() string {
	if l.Caption != "" {
		return l.Caption
	}
	return l.Source
}

// Mapping maps one source table to one Dataverse entity.
type Mapping struct {
	Table                string         `json:"table"`
	Entity               string         `json:"entity"`    // logical name, e.g. account
	EntitySet            string         `json:"entitySet"` // e.g. accounts
	PrimaryID            string         `json:"primaryId"` // e.g. accountid
	Fields               []FieldMapping `json:"fields"`
	Lookups              []Lookup       `json:"lookups,omitempty"`
	Constants            map[string]any `json:"constants,omitempty"`
	OnDelete             DeletePolicy   `json:"onDelete"`
	OnDestinationDeleted ConflictPolicy `json:"onDestinationDeleted"`
	// PrimaryName is the entity's primary name column (e.g. name), to name rows for people.
	PrimaryName string `json:"primaryName,omitempty"`
	// Coupling shapes match-based coupling, for mappings with match fields.
	Coupling MatchCoupling `json:"coupling"`
}

// Dependencies lists the tables whose records must be coupled before this table's records sync.
func (m Mapping) Dependencies() []string {
	seen := map[string]bool{}
	var deps []string
	for _, l := range m.Lookups {
		if !seen[l.Table] {
			seen[l.Table] = true
			deps = append(deps, l.Table)
		}
	}
	return deps
}

// RowName is the primary name a row has after a write of attrs: the name they send (a null
// clears it), or else before, the name it had (a change that leaves the name out keeps it).
func (m Mapping) RowName(attrs Attributes, before string) string {
	if m.PrimaryName == "" {
		return before
	}
	v, sent := attrs[m.PrimaryName]
	if !sent {
		return before
	}
	name, _ := v.(string)
	return name
}

// Row names the Dataverse row with the given id in this mapping's entity set.
func (m Mapping) Row(id uuid.UUID) RowRef {
	return RowRef{EntitySet: m.EntitySet, ID: id, IDAttribute: m.PrimaryID}
}

var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// FieldError is a configuration error at a path inside one mapping, such as "fields[2].type",
// so that a loader can point at the line that holds it.
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

// Validate checks one mapping on its own; Mappings.Validate checks references between mappings.
// Every error is a *FieldError; several are joined.
func (m Mapping) Validate() error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	name := func(path, v string) {
		if !identifier.MatchString(v) {
			bad(path, "%q is not a valid name", v)
		}
	}
	name("table", m.Table)
	name("entity", m.Entity)
	name("entitySet", m.EntitySet)
	name("primaryId", m.PrimaryID)
	if m.PrimaryName != "" {
		name("primaryName", m.PrimaryName)
	}
	if len(m.Fields) == 0 {
		bad("fields", "at least one field mapping is needed")
	}
	attrs := map[string]bool{}
	for i, f := range m.Fields {
		p := fmt.Sprintf("fields[%d]", i)
		name(p+".source", f.Source)
		name(p+".attribute", f.Attribute)
		switch f.Type {
		case TypeString, TypeNumber, TypeInteger, TypeBoolean:
		default:
			bad(p+".type", "%q is not one of string, number, integer, boolean", f.Type)
		}
		if f.Match != nil && f.Match.Priority < 0 {
			bad(p+".match.priority", "the priority must be 0 (the highest) or more")
		}
		if attrs[f.Attribute] {
			bad(p+".attribute", "attribute %q is mapped twice", f.Attribute)
		}
		attrs[f.Attribute] = true
	}
	for i, l := range m.Lookups {
		p := fmt.Sprintf("lookups[%d]", i)
		name(p+".source", l.Source)
		name(p+".table", l.Table)
		name(p+".bind", l.Bind)
		if q := l.Query; q != nil {
			name(p+".query.entitySet", q.EntitySet)
			name(p+".query.idAttribute", q.IDAttribute)
			if !strings.Contains(q.Filter, "{rowId}") {
				bad(p+".query.filter", "the filter must contain {rowId}")
			}
		}
	}
	switch m.OnDelete {
	case DeleteRow, DeleteDeactivate, DeleteUncouple, DeleteReport:
	default:
		bad("onDelete", "%q is not one of delete, deactivate, uncouple, report", m.OnDelete)
	}
	switch m.OnDestinationDeleted {
	case ConflictReport, ConflictRestore, ConflictUncouple:
	default:
		bad("onDestinationDeleted", "%q is not one of report, restore, uncouple", m.OnDestinationDeleted)
	}
	return errors.Join(errs...)
}

// Mappings is the set of table mappings the workers use, by table.
type Mappings map[string]Mapping

// For returns the mapping of a table.
func (ms Mappings) For(table string) (Mapping, bool) { m, ok := ms[table]; return m, ok }

// Tables lists the mapped tables in a stable order.
func (ms Mappings) Tables() []string {
	t := make([]string, 0, len(ms))
	for k := range ms {
		t = append(t, k)
	}
	sort.Strings(t)
	return t
}

// Validate checks every mapping and that every lookup depends on a mapped table.
func (ms Mappings) Validate() error {
	var errs []error
	for _, table := range ms.Tables() {
		m := ms[table]
		if err := m.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("mapping %s: %w", table, err))
		}
		if err := ms.validateReferences(m); err != nil {
			errs = append(errs, fmt.Errorf("mapping %s: %w", table, err))
		}
	}
	return errors.Join(errs...)
}

// validateReferences checks that every lookup of m depends on a mapped table.
func (ms Mappings) validateReferences(m Mapping) error {
	var errs []error
	for i, l := range m.Lookups {
		if _, ok := ms[l.Table]; !ok {
			errs = append(errs, &FieldError{Path: fmt.Sprintf("lookups[%d].table", i), Msg: fmt.Sprintf("table %q has no mapping", l.Table)})
		}
	}
	return errors.Join(errs...)
}

// ValidateReferences checks the lookups of one mapping against the set, for loaders that report
// errors per mapping.
func (ms Mappings) ValidateReferences(m Mapping) error { return ms.validateReferences(m) }

// Attributes turns an event's fields into the attribute values of the Dataverse write. A field
// missing from the event is left out (the row keeps its value); a field present with the wrong
// JSON type is an error naming the field, which makes the event invalid.
func (m Mapping) Attributes(fields map[string]any) (Attributes, error) {
	attrs := Attributes{}
	for k, v := range m.Constants {
		attrs[k] = v
	}
	for _, f := range m.Fields {
		raw, present := fields[f.Source]
		if !present {
			continue
		}
		v, err := f.convert(raw)
		if err != nil {
			return nil, fmt.Errorf("field %s: %w", f.Source, err)
		}
		attrs[f.Attribute] = v
	}
	return attrs, nil
}

func (f FieldMapping) convert(raw any) (any, error) {
	if raw == nil {
		return nil, nil // an explicit null clears the attribute
	}
	switch f.Type {
	case TypeString:
		s, ok := raw.(string)
		if !ok {
			return nil, fmt.Errorf("want a string, got %s", jsonType(raw))
		}
		return s, nil
	case TypeNumber, TypeInteger:
		n, ok := raw.(json.Number)
		if !ok {
			if fl, isFloat := raw.(float64); isFloat {
				n = json.Number(fmt.Sprint(fl))
			} else {
				return nil, fmt.Errorf("want a number, got %s", jsonType(raw))
			}
		}
		if f.Type == TypeInteger {
			i, err := n.Int64()
			if err != nil || i > math.MaxInt32 || i < math.MinInt32 {
				return nil, fmt.Errorf("want a whole number, got %s", n)
			}
			return i, nil
		}
		if _, err := n.Float64(); err != nil {
			return nil, fmt.Errorf("want a number, got %s", n)
		}
		return n, nil
	case TypeBoolean:
		b, ok := raw.(bool)
		if !ok {
			return nil, fmt.Errorf("want true or false, got %s", jsonType(raw))
		}
		return b, nil
	}
	return nil, fmt.Errorf("unknown type %q", f.Type)
}

func jsonType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number, float64:
		return "a number"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	}
	return fmt.Sprintf("%T", v)
}

// LookupValue returns the non-empty string value of a lookup's source field. ok is false when the
// field is absent or empty (the lookup is not written); an error means the field is not a string.
func (l Lookup) LookupValue(fields map[string]any) (string, bool, error) {
	raw, present := fields[l.Source]
	if !present || raw == nil {
		return "", false, nil
	}
	s, isString := raw.(string)
	if !isString {
		return "", false, fmt.Errorf("field %s: want a string, got %s", l.Source, jsonType(raw))
	}
	s = strings.TrimSpace(s)
	if err := CheckKey(s); err != nil {
		return "", false, fmt.Errorf("field %s names no record: its value %w", l.Source, err)
	}
	return s, s != "", nil
}
