package main

import (
	"testing"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/events"
)

func TestCustomerEventsAreWholeValidUpsertsOfAbout630Bytes(t *testing.T) {
	m, _ := domain.DefaultMappings().For("customer")
	for _, i := range []int{0, 4999, 5000, 123456} {
		c := CustomerChange("01-drain", i, 5000)
		if n := len(c.Data); n < 600 || n > 660 {
			t.Errorf("event %d is %d bytes, not about 630", i, n)
		}
		ev, f := events.Decode(c.Subject, nil, c.Data)
		if f != nil {
			t.Fatalf("event %d does not decode: %v", i, f)
		}
		if want := int64(i/5000 + 1); ev.Version != want || ev.Table != "customer" || ev.ID != c.MsgID {
			t.Errorf("event %d: version %d (want %d), table %q, id %q (msg id %q)", i, ev.Version, want, ev.Table, ev.ID, c.MsgID)
		}
		attrs, err := m.Attributes(ev.Fields)
		if err != nil {
			t.Fatalf("event %d does not map: %v", i, err)
		}
		// Every mapped field of the customer is written.
		if len(attrs) != len(m.Fields)+len(m.Constants) {
			t.Errorf("event %d maps to %d attributes, want %d", i, len(attrs), len(m.Fields)+len(m.Constants))
		}
	}
	if a, b := CustomerChange("r", 7, 5000), CustomerChange("r", 5007, 5000); a.MsgID == b.MsgID {
		t.Errorf("two versions of a customer share the message id %q", a.MsgID)
	}
}
