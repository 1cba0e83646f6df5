// Package mappingfile loads table mappings from a YAML file over Business Central's defaults.
// A mapping in the file replaces the default mapping of its table whole; tables the file does
// not name keep their defaults. Every error names the file and line.
package mappingfile

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/dvsync/dvsync/domain"
)

type file struct {
	Mappings []mapping `yaml:"mappings"`
}

type mapping struct {
	Table                string         `yaml:"table"`
	Entity               string         `yaml:"entity"`
	EntitySet            string         `yaml:"entitySet"`
	PrimaryID            string         `yaml:"primaryId"`
	Fields               []field        `yaml:"fields"`
	Lookups              []lookup       `yaml:"lookups"`
	Constants            map[string]any `yaml:"constants"`
	OnDelete             string         `yaml:"onDelete"`
	OnDestinationDeleted string         `yaml:"onDestinationDeleted"`
	PrimaryName          string         `yaml:"primaryName"`
	// Match-based coupling, as Business Central's table mapping options: both on when absent.
	CreateNewIfNoMatch *bool `yaml:"createNewIfNoMatch"`
	SyncAfterMatch     *bool `yaml:"syncAfterMatch"`
}

type field struct {
	Source    string `yaml:"source"`
	Attribute string `yaml:"attribute"`
	Type      string `yaml:"type"`
	// Match makes the field a match-based coupling criterion: {priority: 0, caseSensitive: false}.
	Match *struct {
		Priority      int  `yaml:"priority"`
		CaseSensitive bool `yaml:"caseSensitive"`
	} `yaml:"match"`
}

type lookup struct {
	Source  string `yaml:"source"`
	Table   string `yaml:"table"`
	Bind    string `yaml:"bind"`
	Caption string `yaml:"caption"`
	Query   *struct {
		EntitySet   string `yaml:"entitySet"`
		IDAttribute string `yaml:"idAttribute"`
		Filter      string `yaml:"filter"`
	} `yaml:"query"`
}

// Load reads path and returns the defaults with the file's mappings applied.
func Load(path string) (domain.Mappings, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("mappings: %w", err)
	}
	return Parse(path, data)
}

// Parse is Load on bytes already read; name is used in errors.
func Parse(name string, data []byte) (domain.Mappings, error) {
	var f file
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, decodeError(name, err)
	}
	var root yaml.Node
	_ = yaml.Unmarshal(data, &root)
	items := mappingNodes(&root)

	out := domain.DefaultMappings()
	var errs []error
	seen := map[string]int{}
	for i, m := range f.Mappings {
		dm := m.domain()
		node := items[i]
		if prev, dup := seen[dm.Table]; dup {
			errs = append(errs, fmt.Errorf("%s:%d: table %q is mapped twice (first at line %d)", name, lineAt(node, "table"), dm.Table, prev))
			continue
		}
		seen[dm.Table] = node.Line
		errs = append(errs, located(name, node, dm.Validate())...)
		out[dm.Table] = dm
	}
	for i, m := range f.Mappings {
		errs = append(errs, located(name, items[i], out.ValidateReferences(out[m.Table]))...)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

func (m mapping) domain() domain.Mapping {
	dm := domain.Mapping{Table: m.Table, Entity: m.Entity, EntitySet: m.EntitySet, PrimaryID: m.PrimaryID,
		Constants: m.Constants, OnDelete: domain.DeletePolicy(m.OnDelete), OnDestinationDeleted: domain.ConflictPolicy(m.OnDestinationDeleted),
		PrimaryName: m.PrimaryName,
		Coupling: domain.MatchCoupling{NoCreate: m.CreateNewIfNoMatch != nil && !*m.CreateNewIfNoMatch,
			NoSync: m.SyncAfterMatch != nil && !*m.SyncAfterMatch}}
	if dm.OnDelete == "" {
		dm.OnDelete = domain.DeleteDeactivate
	}
	if dm.OnDestinationDeleted == "" {
		dm.OnDestinationDeleted = domain.ConflictReport
	}
	for _, f := range m.Fields {
		df := domain.FieldMapping{Source: f.Source, Attribute: f.Attribute, Type: domain.FieldType(f.Type)}
		if f.Match != nil {
			df.Match = &domain.FieldMatch{Priority: f.Match.Priority, CaseSensitive: f.Match.CaseSensitive}
		}
		dm.Fields = append(dm.Fields, df)
	}
	for _, l := range m.Lookups {
		dl := domain.Lookup{Source: l.Source, Table: l.Table, Bind: l.Bind, Caption: l.Caption}
		if l.Query != nil {
			dl.Query = &domain.LookupQuery{EntitySet: l.Query.EntitySet, IDAttribute: l.Query.IDAttribute, Filter: l.Query.Filter}
		}
		dm.Lookups = append(dm.Lookups, dl)
	}
	return dm
}

// mappingNodes returns the node of each item of the top-level mappings sequence.
func mappingNodes(root *yaml.Node) []*yaml.Node {
	if root.Kind != yaml.DocumentNode || len(root.Content) == 0 {
		return nil
	}
	seq := value(root.Content[0], "mappings")
	if seq == nil {
		return nil
	}
	return seq.Content
}

// value returns the value node of key in a mapping node.
func value(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

var pathStep = regexp.MustCompile(`^([A-Za-z]+)(?:\[(\d+)\])?$`)

// lineAt follows a path such as "fields[2].type" from a mapping's node and returns the line it
// reaches, or the deepest line on the way.
func lineAt(n *yaml.Node, path string) int {
	line := n.Line
	for _, step := range strings.Split(path, ".") {
		m := pathStep.FindStringSubmatch(step)
		if m == nil {
			break
		}
		next := value(n, m[1])
		if next == nil {
			break
		}
		n, line = next, next.Line
		if m[2] != "" {
			i, _ := strconv.Atoi(m[2])
			if n.Kind != yaml.SequenceNode || i >= len(n.Content) {
				break
			}
			n, line = n.Content[i], n.Content[i].Line
		}
	}
	return line
}

// located prefixes each FieldError with file and line.
func located(name string, node *yaml.Node, err error) []error {
	if err == nil {
		return nil
	}
	var list []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	} else {
		list = []error{err}
	}
	out := make([]error, 0, len(list))
	for _, e := range list {
		var fe *domain.FieldError
		if errors.As(e, &fe) {
			out = append(out, fmt.Errorf("%s:%d: %s", name, lineAt(node, fe.Path), fe))
		} else {
			out = append(out, fmt.Errorf("%s:%d: %w", name, node.Line, e))
		}
	}
	return out
}

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// decodeError rewrites yaml's "line N: msg" errors as "file:N: msg".
func decodeError(name string, err error) error {
	var te *yaml.TypeError
	msgs := []string{err.Error()}
	if errors.As(err, &te) {
		msgs = te.Errors
	}
	out := make([]error, len(msgs))
	for i, m := range msgs {
		if sub := yamlLine.FindStringSubmatch(m); sub != nil {
			out[i] = fmt.Errorf("%s:%s: %s", name, sub[1], strings.ReplaceAll(sub[2], "mappingfile.", ""))
		} else {
			out[i] = fmt.Errorf("%s: %s", name, m)
		}
	}
	return errors.Join(out...)
}
