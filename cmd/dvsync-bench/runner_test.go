package main

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/dvsync/dvsync/infra/natsjs"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func jetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	srv, err := natsjs.StartEmbedded("127.0.0.1", -1, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close(); srv.Shutdown(); srv.WaitForShutdown() })
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(publishWindow))
	if err != nil {
		t.Fatal(err)
	}
	if err := natsjs.Ensure(context.Background(), js, natsjs.DefaultTopology()); err != nil {
		t.Fatal(err)
	}
	return js
}

// The backlog is published once (a retried window is deduplicated), and a drain counts what the
// consumer acknowledged after its first acknowledgement, up to the last.
func TestDrainOfABacklogCountsItsAcknowledgements(t *testing.T) {
	ctx := context.Background()
	js := jetStream(t)
	const n = 3000
	if err := publishBacklog(ctx, js, "t", 0, n, 1000); err != nil {
		t.Fatal(err)
	}
	// Published again: every message id is a duplicate.
	if err := publishBacklog(ctx, js, "t", 0, n, 1000); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, natsjs.ChangesStream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := s.Info(ctx); err != nil || info.State.Msgs != n {
		t.Fatalf("stream holds %v messages (%v), want %d", info.State.Msgs, err, n)
	}
	cfg := natsjs.DefaultTopology().WorkerConsumerConfig()
	cfg.Durable = "test"
	cons, err := js.CreateOrUpdateConsumer(ctx, natsjs.ChangesStream, cfg)
	if err != nil {
		t.Fatal(err)
	}
	first := 0
	done := make(chan struct{})
	var d Drain
	var derr error
	go func() {
		defer close(done)
		d, derr = measureDrain(ctx, cons, 0, func() { first++ })
	}()
	// Slow enough that the drain spans many readings.
	cc, err := cons.Consume(func(m jetstream.Msg) { time.Sleep(200 * time.Microsecond); _ = m.Ack() })
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Stop()
	<-done
	if derr != nil {
		t.Fatal(derr)
	}
	if first != 1 {
		t.Errorf("onFirst ran %d times, want once", first)
	}
	if d.Done <= 0 || d.Done > n || d.Elapsed <= 0 || d.Rate() <= 0 {
		t.Errorf("drain = %+v (rate %.0f/s), want between 1 and %d acknowledgements over a positive time", d, d.Rate(), n)
	}
	info, err := cons.Info(ctx)
	if err != nil || info.NumPending != 0 || info.NumAckPending != 0 || acked(info) != n {
		t.Errorf("after the drain: %d pending, %d waiting for an ack, %d acknowledged (%v); want 0, 0, %d",
			info.NumPending, info.NumAckPending, acked(info), err, n)
	}
}

// A sustained measurement ends at its time even though messages are left.
func TestSustainedMeasurementEndsOnTime(t *testing.T) {
	ctx := context.Background()
	js := jetStream(t)
	if err := publishBacklog(ctx, js, "t", 0, 5000, 5000); err != nil {
		t.Fatal(err)
	}
	cfg := natsjs.DefaultTopology().WorkerConsumerConfig()
	cfg.Durable = "test"
	cons, err := js.CreateOrUpdateConsumer(ctx, natsjs.ChangesStream, cfg)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) { time.Sleep(time.Millisecond); _ = m.Ack() })
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Stop()
	d, err := measureDrain(ctx, cons, 300*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d.Elapsed < 300*time.Millisecond || d.Done <= 0 || d.Done >= 5000 {
		t.Errorf("drain = %+v, want a part of the backlog over at least 300ms", d)
	}
}
