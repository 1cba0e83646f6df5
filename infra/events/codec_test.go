package events_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/events"
)

const structured = `{
  "specversion": "1.0",
  "id": "bc-7f3a9c1e-0001",
  "type": "dvsync.record.upserted",
  "source": "bc://cronus/CRONUS%20USA",
  "subject": "customer/C10000",
  "time": "2026-11-24T10:00:00Z",
  "datacontenttype": "application/json",
  "data": {"table": "customer", "key": "C10000", "version": 42,
           "fields": {"number": "C10000", "displayName": "Adatum Corporation", "currencyCode": "EUR", "creditLimit": 12500.50}}
}`

func TestDecodeStructured(t *testing.T) {
	ev, f := events.Decode("dvsync.changes.customer", nil, []byte(structured))
	if f != nil {
		t.Fatal(f)
	}
	if ev.ID != "bc-7f3a9c1e-0001" || ev.Type != domain.EventUpserted || ev.Table != "customer" || ev.Key != "C10000" ||
		ev.Version != 42 || ev.Fields["displayName"] != "Adatum Corporation" {
		t.Fatalf("decoded %+v", ev)
	}
	if n, _ := ev.Fields["creditLimit"].(json.Number); n.String() != "12500.50" {
		t.Errorf("creditLimit = %v, want the exact number 12500.50", ev.Fields["creditLimit"])
	}
}

func TestDecodeBinary(t *testing.T) {
	h := map[string][]string{"ce-specversion": {"1.0"}, "ce-id": {"x1"}, "ce-type": {"dvsync.record.deleted"},
		"ce-source": {"bc"}, "Content-Type": {"application/json"}}
	ev, f := events.Decode("dvsync.changes.item", h, []byte(`{"table":"item","key":"1000","version":3}`))
	if f != nil || ev.Type != domain.EventDeleted || ev.Key != "1000" || ev.ID != "x1" {
		t.Fatalf("decoded %+v, %v", ev, f)
	}
}

func TestEncodeRoundTrips(t *testing.T) {
	in := domain.ChangeEvent{ID: "id-1", Type: domain.EventUpserted, Source: "bc", Table: "currency", Key: "EUR", Version: 5,
		Fields: map[string]any{"code": "EUR"}}
	data, err := events.Encode(in, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	out, f := events.Decode(events.Subject("currency"), nil, data)
	if f != nil || out.ID != in.ID || out.Version != 5 || out.Fields["code"] != "EUR" {
		t.Fatalf("round trip gave %+v, %v", out, f)
	}
}

func TestInvalidEventsSayWhy(t *testing.T) {
	valid := func(mut func(m map[string]any)) string {
		var m map[string]any
		_ = json.Unmarshal([]byte(structured), &m)
		mut(m)
		b, _ := json.Marshal(m)
		return string(b)
	}
	cases := []struct{ name, subject, body, reason string }{
		{"not JSON", "dvsync.changes.customer", "hello", "not JSON"},
		{"not a CloudEvent", "dvsync.changes.customer", `{"table":"customer"}`, "CloudEvent"},
		{"unknown type", "dvsync.changes.customer", valid(func(m map[string]any) { m["type"] = "created" }), `type "created"`},
		{"missing key", "dvsync.changes.customer", valid(func(m map[string]any) { delete(m["data"].(map[string]any), "key") }), "data.key is missing"},
		{"missing version", "dvsync.changes.customer", valid(func(m map[string]any) { delete(m["data"].(map[string]any), "version") }), "data.version is missing"},
		{"version not a number", "dvsync.changes.customer", valid(func(m map[string]any) { m["data"].(map[string]any)["version"] = "42" }), "data is not a JSON object"},
		{"table differs from subject", "dvsync.changes.vendor", structured, "does not match the subject"},
		{"subject differs from key", "dvsync.changes.customer", valid(func(m map[string]any) { m["subject"] = "customer/C2" }), "is not \"customer/C10000\""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, f := events.Decode(tc.subject, nil, []byte(tc.body))
			if f == nil || f.Kind != domain.KindInvalidEvent || f.Class != domain.ClassSetup || !strings.Contains(f.Message, tc.reason) {
				t.Fatalf("failure = %+v, want invalid_event mentioning %q", f, tc.reason)
			}
		})
	}
}

// Keys and ids end up in subjects, message ids, headers, logs and database indexes: one that
// would break any of them is an invalid event, said in a sentence that does not echo it.
func TestHostileKeysAndIDsAreInvalidEvents(t *testing.T) {
	event := func(id, key string) []byte {
		b, _ := json.Marshal(map[string]any{"specversion": "1.0", "id": id, "type": "dvsync.record.upserted", "source": "bc",
			"data": map[string]any{"table": "customer", "key": key, "version": 1, "fields": map[string]any{}}})
		return b
	}
	cases := []struct {
		name, id, key, reason string
	}{
		{"control characters in the key", "id-1", "C1\x1b[31m", "data.key contains control characters"},
		{"NUL in the key", "id-2", "C1\x00", "data.key contains control characters"},
		{"a 2 kB key", "id-3", strings.Repeat("K", 2048), "data.key is 2048 bytes long, more than 1024"},
		{"NUL in the id", "id\x00-4", "C1", "the CloudEvent id contains control characters"},
		{"a 2 kB id", strings.Repeat("i", 2048), "C1", "the CloudEvent id is 2048 bytes long, more than 1024"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, f := events.Decode("dvsync.changes.customer", nil, event(tc.id, tc.key))
			if f == nil || f.Kind != domain.KindInvalidEvent || f.Details["reason"] != tc.reason {
				t.Fatalf("failure %+v, want invalid_event %q", f, tc.reason)
			}
		})
	}
}
