package domain

import (
	"fmt"
	"strings"
	"testing"
)

// A minimal error event still names what the record waits for: the projector replays a
// dependency_not_coupled error by its dependency once that is coupled. Its details stay bounded.
func TestMinimalErrorEventKeepsItsDetailsBounded(t *testing.T) {
	f := DependencyNotCoupled(ChangeEvent{Table: "customer", Key: "C1"}, Lookup{Source: "currencyCode", Table: "currency", Caption: "Currency Code"}, "USD")
	for i := range 40 {
		f.Details[fmt.Sprintf("extra%02d", i)] = strings.Repeat("x", 5000)
	}
	m := ErrorEvent{Failure: *f, Table: "customer", Key: "C1"}.Minimal()
	if m.Details["dependency_table"] != "currency" || m.Details["dependency_key"] != "USD" {
		t.Fatalf("with many details the minimal event lost the dependency: %v", m.Details)
	}
	if len(m.Details) > maxMinimalDetails {
		t.Fatalf("%d details kept, want at most %d", len(m.Details), maxMinimalDetails)
	}
	for k, v := range m.Details {
		if len(v) > MaxKeyBytes+64 { // Truncate adds its marker
			t.Fatalf("detail %s keeps %d bytes", k, len(v))
		}
	}
	small := ErrorEvent{Failure: *DependencyNotCoupled(ChangeEvent{Table: "customer", Key: "C1"}, Lookup{Source: "currencyCode", Table: "currency", Caption: "Currency Code"}, "USD")}.Minimal()
	if small.Details["dependency_table"] != "currency" || small.Details["dependency_key"] != "USD" {
		t.Fatalf("minimal details %v lost the dependency", small.Details)
	}
}
