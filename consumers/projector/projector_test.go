package projector_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dvsync/dvsync/consumers/projector"
	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/natsjs"
	"github.com/dvsync/dvsync/infra/postgres"
	"github.com/dvsync/dvsync/infra/postgres/pgtest"
	"github.com/dvsync/dvsync/infra/telemetry"
)

var dbURL string

func TestMain(m *testing.M) { pgtest.Main(m, "projector", &dbURL) }

// flaky is the real ledger behind a database that fails its first calls.
type flaky struct {
	*postgres.Store
	failuresLeft atomic.Int32
	calls        atomic.Int32
}

func (f *flaky) RecordError(ctx context.Context, ev domain.ErrorEvent) error {
	f.calls.Add(1)
	if f.failuresLeft.Add(-1) >= 0 {
		return errors.New("connection refused (the database is down)")
	}
	return f.Store.RecordError(ctx, ev)
}

// An error event that cannot be stored is retried, and acknowledged only once it is stored.
func TestAnErrorEventIsNeverAckedBeforeItIsStored(t *testing.T) {
	srv, err := natsjs.StartEmbedded("127.0.0.1", -1, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := natsjs.Ensure(ctx, js, natsjs.DefaultTopology()); err != nil {
		t.Fatal(err)
	}
	store, err := postgres.Open(ctx, dbURL, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ledger := &flaky{Store: store}
	ledger.failuresLeft.Store(2)
	done := make(chan error, 1)
	go func() {
		done <- projector.Run(ctx, nc, &projector.Projector{Ledger: ledger, Metrics: telemetry.New(nil),
			Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	}()

	v := int64(1)
	ev := domain.ErrorEvent{ID: "err-flaky-1", OccurredAt: time.Now().UTC(), Failure: *domain.MappingMissing("vendor"),
		Table: "vendor", Key: "V1", EventVersion: &v, Event: []byte(`{}`), Stage: "sync"}
	if err := (natsjs.Publisher{JS: js}).PublishError(ctx, ev); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		list, _ := store.ListErrors(ctx, postgres.ErrorFilter{Table: "vendor", Key: "V1"})
		// The projector's consumer is a push consumer (watermill's), which the new API does not fetch.
		legacy, _ := nc.JetStream()
		info, _ := legacy.ConsumerInfo(natsjs.ErrorsStream, natsjs.ProjectorConsumer)
		if len(list) == 1 && info != nil && info.NumAckPending == 0 && info.NumPending == 0 {
			if ledger.calls.Load() < 3 || list[0].Occurrences != 1 {
				t.Fatalf("stored after %d calls with %d occurrences; want at least 3 calls and one occurrence", ledger.calls.Load(), list[0].Occurrences)
			}
			break
		}
		if info != nil && info.NumAckPending == 0 && info.NumPending == 0 && ledger.calls.Load() > 0 && len(list) == 0 {
			t.Fatal("the error event was acknowledged before it was stored")
		}
		if time.Now().After(deadline) {
			t.Fatalf("not stored: %d calls, %d rows, consumer %+v", ledger.calls.Load(), len(list), info)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
