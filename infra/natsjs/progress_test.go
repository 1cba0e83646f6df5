package natsjs_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/dvsync/dvsync/infra/natsjs"
)

// A table's waiting changes are counted from the workers' consumer's delivered position: changes
// handed out (acked or not) are not waiting, even while another table's unacked change holds
// the ack floor back, where TableBacklog still counts every one of them.
func TestWaitingCountsFromTheDeliveredPosition(t *testing.T) {
	js := connect(t)
	ctx := context.Background()
	if err := natsjs.Ensure(ctx, js, natsjs.DefaultTopology()); err != nil {
		t.Fatal(err)
	}
	publish := func(subject string, n int) {
		t.Helper()
		for range n {
			if _, err := js.Publish(ctx, subject, []byte("{}")); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish("dvsync.changes.customer", 1) // held unacked: the ack floor stays before it
	publish("dvsync.changes.currency", 5)
	c, err := js.Consumer(ctx, natsjs.ChangesStream, natsjs.WorkerConsumer)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.Fetch(6, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if len(msgs) != 6 {
		t.Fatalf("fetched %d, want 6", len(msgs))
	}
	for _, m := range msgs[1:5] { // four currency changes acked, one still in hand
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	publish("dvsync.changes.currency", 2) // not handed out yet
	pos, err := natsjs.WorkerPosition(ctx, js)
	if err != nil || pos.Delivered != 6 || pos.AckFloor != 0 || pos.FirstSeq != 1 {
		t.Fatalf("position = %+v, %v; want delivered 6, ack floor 0, first 1", pos, err)
	}
	waiting, err := natsjs.TableWaiting(ctx, js, "currency", pos.Delivered)
	if err != nil || waiting != 2 {
		t.Fatalf("currency waiting = %d, %v; want the 2 not handed out", waiting, err)
	}
	if n, err := natsjs.TableWaiting(ctx, js, "customer", pos.Delivered); err != nil || n != 0 {
		t.Fatalf("customer waiting = %d, %v; want 0 (its change is in hand)", n, err)
	}
	// From the ack floor every currency change after the held customer one counts, acked or not.
	if n, err := natsjs.TableBacklog(ctx, js, "currency"); err != nil || n != 7 {
		t.Fatalf("currency backlog from the ack floor = %d, %v; want 7", n, err)
	}
}
