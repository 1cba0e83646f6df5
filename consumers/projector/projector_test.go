package projector_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dvsync/dvsync/consumers/projector"
	"github.com/dvsync/dvsync/consumers/replay"
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

type harness struct {
	t     *testing.T
	url   string
	nc    *nats.Conn
	js    jetstream.JetStream
	store *postgres.Store
}

// newHarness starts an embedded JetStream with dvsync's streams and opens the test database.
func newHarness(t *testing.T) *harness {
	t.Helper()
	srv, err := natsjs.StartEmbedded("127.0.0.1", -1, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if err := natsjs.Ensure(ctx, js, natsjs.DefaultTopology()); err != nil {
		t.Fatal(err)
	}
	store, err := postgres.Open(ctx, dbURL, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	return &harness{t: t, url: srv.ClientURL(), nc: nc, js: js, store: store}
}

// startProjector runs the projector on a connection of its own until ctx is cancelled.
func (h *harness) startProjector(ctx context.Context, ledger domain.ErrorLedger) <-chan error {
	h.t.Helper()
	conn, err := nats.Connect(h.url) // Run drains and closes it
	if err != nil {
		h.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		err := projector.Run(ctx, conn, &projector.Projector{Ledger: ledger, Metrics: telemetry.New(nil),
			Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err == nil && !conn.IsClosed() {
			err = errors.New("projector.Run returned with its connection open")
		}
		done <- err
	}()
	return done
}

// consumerSettled reports whether the projector's consumer has nothing pending or unacked.
func (h *harness) consumerSettled() bool {
	// The projector's consumer is a push consumer (watermill's), which the new API does not fetch.
	legacy, _ := h.nc.JetStream()
	info, _ := legacy.ConsumerInfo(natsjs.ErrorsStream, natsjs.ProjectorConsumer)
	return info != nil && info.NumAckPending == 0 && info.NumPending == 0
}

// Stopping the projector while it is storing a burst of errors loses none and stores none twice:
// what it was handed when it stopped is stored and acked, the rest waits for the next run.
func TestStoppingMidBurstLosesNothing(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	const burst = 300
	run := fmt.Sprintf("run%x", time.Now().UnixNano()) // -count=N shares the database
	v := int64(1)
	for i := range burst {
		ev := domain.ErrorEvent{ID: fmt.Sprintf("err-%s-%d", run, i), OccurredAt: time.Now().UTC(),
			Failure: *domain.MappingMissing("item"), Table: "item", Key: fmt.Sprintf("%s-%d", run, i), EventVersion: &v,
			Event: []byte(`{}`), Stage: "sync"}
		if err := (natsjs.Publisher{JS: h.js}).PublishError(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	stored := func() int {
		list, err := h.store.ListErrors(ctx, postgres.ErrorFilter{Table: "item", Text: run, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		return len(list)
	}

	first, stop := context.WithCancel(ctx)
	done := h.startProjector(first, h.store)
	waitFor(t, "the first errors to be stored", func() bool { return stored() > 0 })
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	atStop := stored()

	second, stop2 := context.WithCancel(ctx)
	defer stop2()
	done2 := h.startProjector(second, h.store)
	waitFor(t, "every error to be stored", func() bool { return stored() == burst && h.consumerSettled() })
	stop2()
	if err := <-done2; err != nil {
		t.Fatal(err)
	}
	list, _ := h.store.ListErrors(ctx, postgres.ErrorFilter{Table: "item", Text: run, Limit: 1000})
	for _, e := range list {
		if e.Occurrences != 1 {
			t.Fatalf("%s/%s stored %d times", e.Table, e.Key, e.Occurrences)
		}
	}
	t.Logf("%d of %d stored before the stop", atStop, burst)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// An error event that cannot be stored is retried, and acknowledged only once it is stored.
func TestAnErrorEventIsNeverAckedBeforeItIsStored(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store, js, nc := h.store, h.js, h.nc
	ledger := &flaky{Store: store}
	ledger.failuresLeft.Store(2)
	done := h.startProjector(ctx, ledger)

	v := int64(1)
	ev := domain.ErrorEvent{ID: "err-flaky-1", OccurredAt: time.Now().UTC(), Failure: *domain.MappingMissing("vendor"),
		Table: "vendor", Key: "V1", EventVersion: &v, Event: []byte(`{}`), Stage: "sync"}
	if err := (natsjs.Publisher{JS: js}).PublishError(ctx, ev); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		list, _ := store.ListErrors(ctx, postgres.ErrorFilter{Table: "vendor", Key: "V1"})
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

// An error that reaches the projector after its dependency was coupled is replayed at once;
// one that failed while the dependency was already coupled is not, or it would loop for ever.
func TestLateDependencyErrorIsReplayedOnce(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	run := fmt.Sprintf("run%x", time.Now().UnixNano())
	cur := run + "-CHF"
	coupledAt := time.Now().UTC().Truncate(time.Millisecond)
	if err := h.store.UpdateCoupling(ctx, "currency", cur, func(context.Context, domain.Coupling) (domain.Coupling, error) {
		return domain.Coupling{Table: "currency", Key: cur, RowID: uuid.New(), Entity: "transactioncurrency", Version: 1,
			Status: domain.CouplingSynced, LastSyncedAt: coupledAt}, nil
	}); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	metrics := telemetry.New(nil)
	p := &projector.Projector{Ledger: h.store, Metrics: metrics, Log: log,
		Dependents: &replay.Replayer{Store: h.store, JS: h.js, Log: log, Metrics: metrics}}
	conn, err := nats.Connect(h.url)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- projector.Run(ctx, conn, p) }()

	lookup := domain.Lookup{Source: "currencyCode", Table: "currency"}
	waiting := func(key string, failedAt time.Time) {
		ev := domain.ChangeEvent{Table: "customer", Key: key}
		v := int64(1)
		e := domain.ErrorEvent{ID: "err-" + key, OccurredAt: failedAt, Failure: *domain.DependencyNotCoupled(ev, lookup, cur),
			Table: "customer", Key: key, EventVersion: &v, Event: []byte(`{"key":"` + key + `"}`), Stage: "lookup"}
		if err := (natsjs.Publisher{JS: h.js}).PublishError(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	before, after := run+"-before", run+"-after"
	waiting(before, coupledAt.Add(-time.Minute)) // failed, then the currency was coupled
	waiting(after, coupledAt.Add(time.Minute))   // failed although the currency was coupled
	stored := func(key string) postgres.StoredError {
		list, _ := h.store.ListErrors(ctx, postgres.ErrorFilter{Table: "customer", Key: key})
		if len(list) != 1 {
			return postgres.StoredError{}
		}
		return list[0]
	}
	waitFor(t, "both errors handled", func() bool {
		return stored(before).ID != 0 && stored(after).ID != 0 && h.consumerSettled()
	})
	if b, a := stored(before), stored(after); b.Status != postgres.ErrorReplayed || b.Replays != 1 || a.Status != postgres.ErrorOpen || a.Replays != 0 {
		t.Fatalf("failed before coupling: %s, %d replays; failed after: %s, %d replays; want replayed once and open", b.Status, b.Replays, a.Status, a.Replays)
	}
	if n := testutil.ToFloat64(metrics.Replays.WithLabelValues("dependency", string(replay.Published))); n != 1 {
		t.Fatalf("dvsync_replays_total{trigger=dependency,outcome=published} = %v, want 1", n)
	}
	stream, err := h.js.Stream(ctx, natsjs.ChangesStream)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.GetLastMsgForSubject(ctx, "dvsync.changes.customer")
	if err != nil || string(msg.Data) != `{"key":"`+before+`"}` || msg.Header.Get(replay.HeaderReplayedBy) != replay.DependencyActor {
		t.Fatalf("replayed change: %v %v", msg, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
