package domain_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/dvsync/dvsync/domain"
)

func TestDefaultMappingsAreValidAndFollowBusinessCentral(t *testing.T) {
	ms := domain.DefaultMappings()
	if err := ms.Validate(); err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		entity string
		deps   []string
	}{
		"currency":      {"transactioncurrency", nil},
		"customer":      {"account", []string{"currency"}},
		"contact":       {"contact", []string{"customer", "currency"}},
		"unitOfMeasure": {"uomschedule", nil},
		"item":          {"product", []string{"unitOfMeasure"}},
	}
	for table, w := range want {
		m, ok := ms.For(table)
		if !ok || m.Entity != w.entity || !slices.Equal(m.Dependencies(), w.deps) {
			t.Errorf("%s: entity %q deps %v; want %q %v", table, m.Entity, m.Dependencies(), w.entity, w.deps)
		}
	}
	binds := map[string]bool{}
	for _, l := range ms["item"].Lookups {
		binds[l.Bind] = true
	}
	if !binds["defaultuomscheduleid"] || !binds["defaultuomid"] {
		t.Errorf("item lookups bind %v; want defaultuomscheduleid and defaultuomid", binds)
	}
}

func TestAttributesConvertTypesAndNameTheBadField(t *testing.T) {
	m := domain.Mapping{Fields: []domain.FieldMapping{
		{Source: "name", Attribute: "name", Type: domain.TypeString},
		{Source: "limit", Attribute: "creditlimit", Type: domain.TypeNumber},
		{Source: "count", Attribute: "count", Type: domain.TypeInteger},
		{Source: "flag", Attribute: "flag", Type: domain.TypeBoolean},
	}, Constants: map[string]any{"customertypecode": 3}}
	attrs, err := m.Attributes(map[string]any{"name": "A", "limit": json.Number("12.50"), "count": json.Number("7"),
		"flag": true, "ignored": "x"})
	if err != nil {
		t.Fatal(err)
	}
	if attrs["name"] != "A" || attrs["creditlimit"] != json.Number("12.50") || attrs["count"] != int64(7) ||
		attrs["flag"] != true || attrs["customertypecode"] != 3 || attrs["ignored"] != nil || len(attrs) != 5 {
		t.Fatalf("attributes = %v", attrs)
	}
	if a, _ := m.Attributes(map[string]any{"name": nil}); a["name"] != nil || !hasKey(a, "name") {
		t.Fatalf("an explicit null must clear the attribute: %v", a)
	}
	for field, bad := range map[string]any{"name": json.Number("1"), "limit": "12", "count": json.Number("1.5"), "flag": "yes"} {
		_, err := m.Attributes(map[string]any{field: bad})
		if err == nil || !strings.Contains(err.Error(), "field "+field) {
			t.Errorf("%s = %v: err %v, want one naming the field", field, bad, err)
		}
	}
}

func hasKey(a domain.Attributes, k string) bool { _, ok := a[k]; return ok }

func TestValidateReportsPathsAndMissingDependencies(t *testing.T) {
	m := domain.DefaultMappings()["customer"]
	m.Fields = append(m.Fields, domain.FieldMapping{Source: "x", Attribute: "name", Type: "text"})
	m.OnDelete = "erase"
	err := m.Validate()
	var fe *domain.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("err = %v, want FieldErrors", err)
	}
	for _, want := range []string{"fields[12].type", "fields[12].attribute: attribute \"name\" is mapped twice", "onDelete"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err %q lacks %q", err, want)
		}
	}
	ms := domain.DefaultMappings()
	delete(ms, "currency")
	if err := ms.Validate(); err == nil || !strings.Contains(err.Error(), `lookups[0].table: table "currency" has no mapping`) {
		t.Fatalf("err = %v", err)
	}
}
