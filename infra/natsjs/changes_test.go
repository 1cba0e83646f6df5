package natsjs_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/events"
	"github.com/dvsync/dvsync/infra/natsjs"
)

func publishChange(t *testing.T, js jetstream.JetStream, table, key string, version int64) uint64 {
	t.Helper()
	ev := domain.ChangeEvent{ID: table + "-" + key + "-" + time.Now().Format("150405.000000000"), Type: domain.EventUpserted,
		Source: "test", Table: table, Key: key, Version: version, Fields: map[string]any{"v": version}}
	data, err := events.Encode(ev, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return publishMsg(t, js, &nats.Msg{Subject: events.Subject(table), Data: data})
}

func publishMsg(t *testing.T, js jetstream.JetStream, m *nats.Msg) uint64 {
	t.Helper()
	ack, err := js.PublishMsg(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// The newest change of a record is found by its key, in either CloudEvents mode, among the
// changes of its table; a record without one is reported as not found, with how far the search
// looked; the bound is the stream's newest Limit messages; no consumer is left behind.
func TestChangeFinderFindsTheNewestChangeOfARecord(t *testing.T) {
	js := connect(t)
	ctx := context.Background()
	if err := natsjs.Ensure(ctx, js, natsjs.DefaultTopology()); err != nil {
		t.Fatal(err)
	}
	publishChange(t, js, "customer", "C1", 1)
	publishChange(t, js, "currency", "EUR", 1)
	newestC1 := publishChange(t, js, "customer", "C1", 2)
	publishMsg(t, js, &nats.Msg{Subject: "dvsync.changes.customer", Data: []byte("not an event")})
	binary := publishMsg(t, js, &nats.Msg{Subject: "dvsync.changes.customer", Header: nats.Header{
		"ce-specversion": {"1.0"}, "ce-id": {"b1"}, "ce-type": {string(domain.EventUpserted)}, "ce-source": {"test"},
		"content-type": {"application/json"}},
		Data: []byte(`{"table":"customer","key":"C3","version":7,"fields":{"name":"binary"}}`)})
	publishChange(t, js, "customer", "C2", 1)
	last := publishChange(t, js, "customer", "C9", 4)

	f := natsjs.ChangeFinder{JS: js}
	for _, c := range []struct {
		key  string
		seq  uint64
		data string
	}{{"C1", newestC1, `"version":2`}, {"C3", binary, `"key":"C3"`}, {"C9", last, `"version":4`}} {
		res, err := f.Newest(ctx, "customer", c.key)
		if err != nil || res.Found == nil || res.Found.Sequence != c.seq || !strings.Contains(string(res.Found.Data), c.data) ||
			!res.Complete || res.Windowed || res.Found.Time.IsZero() {
			t.Fatalf("customer/%s: %+v, %v", c.key, res, err)
		}
	}
	res, err := f.Newest(ctx, "customer", "NOPE")
	if err != nil || res.Found != nil || !res.Complete || res.Windowed || res.Read != 6 || res.Window != last {
		t.Fatalf("a record without a change: %+v, %v", res, err)
	}
	// A table without a change in the stream answers at once, not when the time runs out.
	start := time.Now()
	res, err = (natsjs.ChangeFinder{JS: js, Timeout: 20 * time.Second}).Newest(ctx, "vendor", "V1")
	if err != nil || res.Found != nil || !res.Complete || res.Read != 0 || time.Since(start) > 10*time.Second {
		t.Fatalf("a table without changes: %+v, %v after %s", res, err, time.Since(start))
	}

	// Bounded to the newest 3 messages: C1's changes are older.
	bounded := natsjs.ChangeFinder{JS: js, Limit: 3}
	res, err = bounded.Newest(ctx, "customer", "C1")
	if err != nil || res.Found != nil || !res.Windowed || res.Window != 3 || res.Read > 3 {
		t.Fatalf("C1 beyond the bound: %+v, %v", res, err)
	}
	if res, err = bounded.Newest(ctx, "customer", "C2"); err != nil || res.Found == nil || !res.Windowed {
		t.Fatalf("C2 within the bound: %+v, %v", res, err)
	}

	stream, err := js.Stream(ctx, natsjs.ChangesStream)
	if err != nil {
		t.Fatal(err)
	}
	names := stream.ConsumerNames(ctx)
	for name := range names.Name() {
		if name != natsjs.WorkerConsumer {
			t.Errorf("consumer %s is left behind", name)
		}
	}
	if names.Err() != nil {
		t.Fatal(names.Err())
	}
}
