package natsjs_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dvsync/dvsync/infra/natsjs"
)

// The backlog counts what the consumer has not acknowledged and dates the oldest of it, for a
// pull consumer (the workers') and a push consumer (the projector's).
func TestBacklogCountsAndDatesWhatIsNotAcknowledged(t *testing.T) {
	js := connect(t)
	ctx := context.Background()
	if err := natsjs.Ensure(ctx, js, natsjs.DefaultTopology()); err != nil {
		t.Fatal(err)
	}
	b := &natsjs.Backlog{JS: js, Stream: natsjs.ChangesStream, Consumer: natsjs.WorkerConsumer}
	if got, err := b.Read(ctx); err != nil || got.Pending != 0 || got.AckPending != 0 || !got.Oldest.IsZero() {
		t.Fatalf("empty backlog = %+v, %v", got, err)
	}
	var stored []time.Time
	for _, subject := range []string{"dvsync.changes.currency", "dvsync.changes.customer", "dvsync.changes.item"} {
		ack, err := js.Publish(ctx, subject, []byte("{}"))
		if err != nil {
			t.Fatal(err)
		}
		m, err := mustStream(t, js).GetMsg(ctx, ack.Sequence)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, m.Time)
	}
	got, err := b.Read(ctx)
	if err != nil || got.Pending != 3 || got.AckPending != 0 || !got.Oldest.Equal(stored[0]) {
		t.Fatalf("backlog = %+v, %v; want 3 pending, the oldest stored at %s", got, err, stored[0])
	}
	// Two delivered, the first acknowledged: the second is the oldest, and one waits for its ack.
	c, err := js.Consumer(ctx, natsjs.ChangesStream, natsjs.WorkerConsumer)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.Fetch(2, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if len(msgs) != 2 {
		t.Fatalf("fetched %d messages, want 2", len(msgs))
	}
	if err := msgs[0].DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	got, err = b.Read(ctx)
	if err != nil || got.Pending != 1 || got.AckPending != 1 || !got.Oldest.Equal(stored[1]) {
		t.Fatalf("backlog = %+v, %v; want 1 pending, 1 ack pending, the oldest stored at %s", got, err, stored[1])
	}

	// A push consumer, as watermill creates the projector's, with nobody subscribed.
	if _, err := js.CreateOrUpdatePushConsumer(ctx, natsjs.ErrorsStream, jetstream.ConsumerConfig{Durable: "push",
		DeliverSubject: "deliver.push", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "dvsync.errors.setup.item", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	push := &natsjs.Backlog{JS: js, Stream: natsjs.ErrorsStream, Consumer: "push"}
	if got, err := push.Read(ctx); err != nil || got.Pending != 1 || got.Oldest.IsZero() {
		t.Fatalf("push consumer backlog = %+v, %v; want 1 pending, dated", got, err)
	}
}

func mustStream(t *testing.T, js jetstream.JetStream) jetstream.Stream {
	t.Helper()
	s, err := js.Stream(context.Background(), natsjs.ChangesStream)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// With the server gone the read fails within its context, however the connection waits to
// reconnect: a scrape must not hang.
func TestBacklogReadFailsInTimeWithoutNATS(t *testing.T) {
	srv, err := natsjs.StartEmbedded("127.0.0.1", -1, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := natsjs.Ensure(context.Background(), js, natsjs.DefaultTopology()); err != nil {
		t.Fatal(err)
	}
	b := &natsjs.Backlog{JS: js, Stream: natsjs.ChangesStream, Consumer: natsjs.WorkerConsumer}
	srv.Shutdown()
	srv.WaitForShutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := b.Read(ctx); err == nil {
		t.Fatal("the backlog was read without a server")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("the read took %s with a 500ms context", took)
	}
}
