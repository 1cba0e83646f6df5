package natsjs_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/natsjs"
	"github.com/dvsync/dvsync/internal/testbed"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func connect(t *testing.T) jetstream.JetStream {
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
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func TestEnsureIsIdempotentAndConfiguresTheWorkerConsumer(t *testing.T) {
	js := connect(t)
	ctx := context.Background()
	top := natsjs.DefaultTopology()
	for i := 0; i < 2; i++ {
		if err := natsjs.Ensure(ctx, js, top); err != nil {
			t.Fatalf("run %d: %v", i+1, err)
		}
	}
	c, err := js.Consumer(ctx, natsjs.ChangesStream, natsjs.WorkerConsumer)
	if err != nil {
		t.Fatal(err)
	}
	cfg := c.CachedInfo().Config
	if cfg.AckPolicy != jetstream.AckExplicitPolicy || cfg.MaxDeliver != -1 || cfg.AckWait != 30*time.Second ||
		len(cfg.BackOff) != 0 || cfg.Durable != natsjs.WorkerConsumer || cfg.FilterSubject != "dvsync.changes.>" {
		t.Fatalf("consumer config = %+v", cfg)
	}
	s, err := js.Stream(ctx, natsjs.ChangesStream)
	if err != nil {
		t.Fatal(err)
	}
	if d := s.CachedInfo().Config.Duplicates; d != 2*time.Minute {
		t.Fatalf("duplicate window %s", d)
	}
	// A changed setting is applied by the next start.
	top.MaxAckPending = 5
	if err := natsjs.Ensure(ctx, js, top); err != nil {
		t.Fatal(err)
	}
	info, _ := c.Info(ctx)
	if info.Config.MaxAckPending != 5 {
		t.Fatalf("MaxAckPending = %d after an update, want 5", info.Config.MaxAckPending)
	}
}

func TestEnsureRejectsUnsafeSettings(t *testing.T) {
	top := natsjs.DefaultTopology()
	top.MaxDeliver = -1
	if err := natsjs.Ensure(context.Background(), nil, top); err == nil {
		t.Fatal("unbounded MaxDeliver was accepted")
	}
}

func TestPublishedErrorEventsAreDeduplicatedByID(t *testing.T) {
	js := connect(t)
	ctx := context.Background()
	if err := natsjs.Ensure(ctx, js, natsjs.DefaultTopology()); err != nil {
		t.Fatal(err)
	}
	p := natsjs.Publisher{JS: js}
	ev := domain.ErrorEvent{ID: "dvsync-err-x", Failure: *domain.InvalidEvent("not JSON"), Table: "bad.table*", Key: "seq:1"}
	for i := 0; i < 2; i++ {
		if err := p.PublishError(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	s, _ := js.Stream(ctx, natsjs.ErrorsStream)
	info, _ := s.Info(ctx, jetstream.WithSubjectFilter(">"))
	if info.State.Msgs != 1 {
		t.Fatalf("%d error events stored, want 1", info.State.Msgs)
	}
	if _, ok := info.State.Subjects["dvsync.errors.setup._unknown"]; !ok {
		t.Fatalf("subjects %v; a table that is no subject token goes to _unknown", info.State.Subjects)
	}
}

func TestAnErrorEventTooLargeToPublishGoesOutMinimal(t *testing.T) {
	js := connect(t)
	ctx := context.Background()
	if err := natsjs.Ensure(ctx, js, natsjs.DefaultTopology()); err != nil {
		t.Fatal(err)
	}
	f := domain.InvalidEvent("x")
	f.Message = strings.Repeat("m", 9<<20) // over the server's 8 MiB
	ev := domain.ErrorEvent{ID: "dvsync-err-big", Failure: *f, Table: "customer", Key: "C1",
		CallStack: []domain.Stage{{Name: "sync", Detail: "d"}}, Delivery: domain.Delivery{Stream: natsjs.ChangesStream, Sequence: 7}}
	if err := (natsjs.Publisher{JS: js}).PublishError(ctx, ev); err != nil {
		t.Fatal(err)
	}
	s, _ := js.Stream(ctx, natsjs.ErrorsStream)
	msg, err := s.GetLastMsgForSubject(ctx, "dvsync.errors.setup.customer")
	if err != nil {
		t.Fatal(err)
	}
	var got domain.ErrorEvent
	if err := json.Unmarshal(msg.Data, &got); err != nil {
		t.Fatal(err)
	}
	if !got.Stripped || len(got.Message) > 4096 || got.CallStack != nil || got.Delivery.Sequence != 7 || got.Key != "C1" {
		t.Fatalf("published %d bytes: stripped %v, message %d bytes, delivery %+v", len(msg.Data), got.Stripped, len(got.Message), got.Delivery)
	}
}

// A process that starts before its NATS server can answer waits for it rather than exit; a
// topology JetStream refuses fails at once.
func TestEnsureWhenReadyWaitsForJetStreamToAnswer(t *testing.T) {
	port, err := testbed.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", port), nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	done := make(chan error, 1)
	go func() {
		done <- natsjs.EnsureWhenReady(context.Background(), js, natsjs.DefaultTopology(), 30*time.Second, log)
	}()
	select {
	case err := <-done:
		t.Fatalf("Ensure returned %v before any server was there", err)
	case <-time.After(time.Second): // the server comes late; this is the fault, not synchronisation
	}
	srv, err := natsjs.StartEmbedded("127.0.0.1", port, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("once the server answered: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Ensure did not succeed once the server answered")
	}
	bad := natsjs.DefaultTopology()
	bad.DuplicateWindow = 0
	start := time.Now()
	if err := natsjs.EnsureWhenReady(context.Background(), js, bad, 30*time.Second, log); err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("an invalid topology: %v after %s, want an error at once", err, time.Since(start))
	}
}
