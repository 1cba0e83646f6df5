package events_test

import (
	"testing"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/events"
)

// FuzzDecode: any message either decodes to a complete change event or is an invalid_event with
// a reason for the publisher; never a panic.
func FuzzDecode(f *testing.F) {
	f.Add("dvsync.changes.customer", []byte(structured))
	f.Add("dvsync.changes.item", []byte(`{"specversion":"1.0","id":"1","type":"dvsync.record.deleted","source":"s","data":{"table":"item","key":"1","version":1}}`))
	f.Add("dvsync.changes.customer", []byte("not json"))
	f.Add("dvsync.changes.customer", []byte(`{"specversion":"1.0","id":"1","type":"dvsync.record.upserted","source":"s","data_base64":"e30="}`))
	f.Fuzz(func(t *testing.T, subject string, data []byte) {
		ev, fail := events.Decode(subject, nil, data)
		if fail != nil {
			if fail.Kind != domain.KindInvalidEvent || fail.Details["reason"] == "" {
				t.Fatalf("failure %+v", fail)
			}
			return
		}
		if ev.ID == "" || ev.Table == "" || ev.Key == "" || (ev.Type != domain.EventUpserted && ev.Type != domain.EventDeleted) {
			t.Fatalf("decoded an incomplete event %+v from %q", ev, data)
		}
	})
}
