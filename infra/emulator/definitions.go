package emulator

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
)

// AttrType is a Dataverse attribute type, as AttributeTypeName in the metadata.
type AttrType string

const (
	String   AttrType = "String"
	Memo     AttrType = "Memo"
	Integer  AttrType = "Integer"
	Decimal  AttrType = "Decimal"
	Money    AttrType = "Money"
	Boolean  AttrType = "Boolean"
	Picklist AttrType = "Picklist"
	State    AttrType = "State"
	Status   AttrType = "Status"
	Lookup   AttrType = "Lookup"
	UniqueID AttrType = "Uniqueidentifier"
	DateTime AttrType = "DateTime"
)

// Attribute is one column of an entity, named as in Dataverse's attribute metadata.
type Attribute struct {
	Name      string   `json:"logicalName"`
	Type      AttrType `json:"type"`
	MaxLength int      `json:"maxLength,omitempty"` // strings
	Options   []int    `json:"options,omitempty"`   // picklists, states and statuses
	// Labels are the options' labels, for their formatted values; an option without one is
	// formatted as its number (state and status default to Active and Inactive).
	Labels  map[int]string `json:"labels,omitempty"`
	Targets []string       `json:"targets,omitempty"` // lookups: target entity logical names
	// MinValue and MaxValue bound numbers; nil means the type's own range.
	MinValue *float64 `json:"minValue,omitempty"`
	MaxValue *float64 `json:"maxValue,omitempty"`
	// RequiredLevel is None, ApplicationRequired or SystemRequired. The Web API enforces only
	// SystemRequired, and only on create.
	RequiredLevel string `json:"requiredLevel,omitempty"`
}

// Navigation is a single-valued navigation property: the name written as "<name>@odata.bind".
type Navigation struct {
	Name      string // e.g. parentcustomerid_account
	Attribute string // the lookup attribute it sets, e.g. parentcustomerid
	Target    string // target entity logical name
}

// Entity is the metadata of one table, named as in Dataverse's entity metadata.
type Entity struct {
	LogicalName   string `json:"logicalName"`
	SchemaName    string `json:"schemaName"` // used in privilege names: prvCreate<SchemaName>
	LocalizedName string `json:"displayName"`
	EntitySet     string `json:"entitySetName"`
	PrimaryID     string `json:"primaryIdAttribute"`
	PrimaryName   string `json:"primaryNameAttribute"`
	TypeCode      int    `json:"objectTypeCode"` // shown in privilege errors as OTC
	// AttributeList is the file's form of the columns; Attributes indexes them by name.
	AttributeList []Attribute           `json:"attributes"`
	Attributes    map[string]Attribute  `json:"-"`
	Navigations   map[string]Navigation `json:"-"`
	AlternateKeys [][]string            `json:"alternateKeys,omitempty"`
	// DuplicateRules are the attribute sets whose equal values make two rows duplicates when a
	// request turns duplicate detection on (Dataverse's published default rules).
	DuplicateRules [][]string `json:"duplicateRules,omitempty"`
}

//go:embed definitions/dataverse.json
var shippedDefinitions []byte

// DefaultEntities are the tables dvsync maps, from the definition file shipped with dvsync
// (definitions/dataverse.json).
func DefaultEntities() []*Entity {
	ents, err := ParseDefinitions(shippedDefinitions, nil)
	if err != nil {
		panic("emulator: the shipped definitions are invalid: " + err.Error()) // a test keeps this from shipping
	}
	return ents
}

var validTypes = map[AttrType]bool{String: true, Memo: true, Integer: true, Decimal: true, Money: true, Boolean: true,
	Picklist: true, State: true, Status: true, Lookup: true, UniqueID: true, DateTime: true}

// ParseDefinitions reads a definition file ({"entities":[...]}) and indexes its entities. Lookup
// targets must be among the file's entities or known (the entities already loaded).
func ParseDefinitions(data []byte, known map[string]*Entity) ([]*Entity, error) {
	var file struct {
		Description string    `json:"description"`
		Entities    []*Entity `json:"entities"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&file); err != nil {
		return nil, fmt.Errorf("definitions: %w", err)
	}
	names := map[string]bool{}
	for name := range known {
		names[name] = true
	}
	for _, e := range file.Entities {
		names[e.LogicalName] = true
	}
	var errs []error
	for _, e := range file.Entities {
		if err := e.index(names); err != nil {
			errs = append(errs, fmt.Errorf("definitions: entity %q: %w", e.LogicalName, err))
		}
	}
	return file.Entities, errors.Join(errs...)
}

// index checks an entity read from a file and builds its attribute and navigation maps.
// Polymorphic lookups get one navigation property per target, as <attribute>_<target>.
func (e *Entity) index(entities map[string]bool) error {
	var errs []error
	if e.LogicalName == "" || e.EntitySet == "" || e.PrimaryID == "" || e.SchemaName == "" {
		errs = append(errs, errors.New("logicalName, schemaName, entitySetName and primaryIdAttribute are required"))
	}
	e.Attributes, e.Navigations = map[string]Attribute{}, map[string]Navigation{}
	for _, a := range e.AttributeList {
		if !validTypes[a.Type] {
			errs = append(errs, fmt.Errorf("attribute %q: type %q is not a Dataverse attribute type", a.Name, a.Type))
		}
		e.Attributes[a.Name] = a
		if a.Type != Lookup {
			continue
		}
		if len(a.Targets) == 0 {
			errs = append(errs, fmt.Errorf("attribute %q: a lookup needs targets", a.Name))
		}
		for _, t := range a.Targets {
			if !entities[t] {
				errs = append(errs, fmt.Errorf("attribute %q: target %q is not defined", a.Name, t))
			}
			nav := a.Name
			if len(a.Targets) > 1 {
				nav = a.Name + "_" + t
			}
			e.Navigations[nav] = Navigation{Name: nav, Attribute: a.Name, Target: t}
		}
	}
	if _, ok := e.Attributes[e.PrimaryID]; !ok {
		errs = append(errs, fmt.Errorf("the primary id attribute %q is not among the attributes", e.PrimaryID))
	}
	for _, key := range append(append([][]string{}, e.AlternateKeys...), e.DuplicateRules...) {
		for _, k := range key {
			if _, ok := e.Attributes[k]; !ok {
				errs = append(errs, fmt.Errorf("key or rule attribute %q is not defined", k))
			}
		}
	}
	return errors.Join(errs...)
}
