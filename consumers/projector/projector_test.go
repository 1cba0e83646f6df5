package projector_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dvsync/dvsync/consumers/projector"
	"github.com/dvsync/dvsync/consumers/replay"
	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/events"
	"github.com/dvsync/dvsync/infra/natsjs"
	"github.com/dvsync/dvsync/infra/postgres"
	"github.com/dvsync/dvsync/infra/postgres/pgtest"
	"github.com/dvsync/dvsync/infra/redact"
	"github.com/dvsync/dvsync/infra/storage"
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

func (f *flaky) RecordErrorChecked(ctx context.Context, ev domain.ErrorEvent, notReplayable string) error {
	f.calls.Add(1)
	if f.failuresLeft.Add(-1) >= 0 {
		return errors.New("connection refused (the database is down)")
	}
	return f.Store.RecordErrorChecked(ctx, ev, notReplayable)
}

type harness struct {
	t       *testing.T
	url     string
	nc      *nats.Conn
	js      jetstream.JetStream
	changes jetstream.Stream
	store   *postgres.Store
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
	changes, err := js.Stream(ctx, natsjs.ChangesStream)
	if err != nil {
		t.Fatal(err)
	}
	store, err := postgres.Open(ctx, dbURL, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	return &harness{t: t, url: srv.ClientURL(), nc: nc, js: js, changes: changes, store: store}
}

// change publishes a change event to the changes stream, as a publisher would (no worker runs
// here), and returns the error event a worker would publish for it.
func (h *harness) change(table, key string, version int64, fields map[string]any, f *domain.Failure) domain.ErrorEvent {
	h.t.Helper()
	ce := domain.ChangeEvent{ID: uuid.NewString(), Type: domain.EventUpserted, Source: "test", Table: table, Key: key,
		Version: version, Fields: fields}
	data, err := events.Encode(ce, time.Now())
	if err != nil {
		h.t.Fatal(err)
	}
	msg := &nats.Msg{Subject: events.Subject(table), Data: data,
		Header: nats.Header{"Dvsync-Correlation-Id": {"c-" + ce.ID}, "Authorization": {"Bearer publisher-secret"}}}
	ack, err := h.js.PublishMsg(context.Background(), msg, jetstream.WithMsgID(ce.ID))
	if err != nil {
		h.t.Fatal(err)
	}
	v := version
	return domain.ErrorEvent{ID: "err-" + ce.ID, OccurredAt: time.Now().UTC(), Failure: *f, Table: table, Key: key,
		EventID: ce.ID, EventType: ce.Type, EventVersion: &v, Stage: "sync", Event: data,
		Delivery:     domain.Delivery{Subject: msg.Subject, Stream: ack.Stream, Sequence: ack.Sequence, Delivered: 1},
		EventHeaders: map[string][]string{"Dvsync-Correlation-Id": {"c-" + ce.ID}}}
}

func (h *harness) publishError(ev domain.ErrorEvent) {
	h.t.Helper()
	if err := (natsjs.Publisher{JS: h.js}).PublishError(context.Background(), ev); err != nil {
		h.t.Fatal(err)
	}
}

// coupleCurrency couples a currency as a worker would have, at the time it returns.
func (h *harness) coupleCurrency(key string) time.Time {
	h.t.Helper()
	at := time.Now().UTC().Truncate(time.Millisecond)
	if err := h.store.UpdateCoupling(context.Background(), "currency", key, func(context.Context, domain.Coupling, domain.RecordLock) (domain.Coupling, error) {
		return domain.Coupling{Table: "currency", Key: key, RowID: uuid.New(), Entity: "transactioncurrency", Version: 1,
			Status: domain.CouplingSynced, LastSyncedAt: at}, nil
	}); err != nil {
		h.t.Fatal(err)
	}
	return at
}

// run starts a projector that replays waiting records, and returns its metrics.
func (h *harness) run(ctx context.Context) (*telemetry.Metrics, *replay.Replayer, <-chan error) {
	h.t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	metrics := telemetry.New(nil)
	r := &replay.Replayer{Store: h.store, JS: h.js, Log: log, Metrics: metrics}
	p := &projector.Projector{Ledger: h.store, Changes: h.changes, Metrics: metrics, Log: log, Dependents: r}
	conn, err := nats.Connect(h.url)
	if err != nil {
		h.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- projector.Run(ctx, conn, p) }()
	return metrics, r, done
}

// stored is the one error of table/key, or the zero error while there is none.
func (h *harness) stored(table, key string) storage.StoredError {
	list, _ := h.store.ListErrors(context.Background(), storage.ErrorFilter{Table: table, Key: key})
	if len(list) != 1 {
		return storage.StoredError{}
	}
	return list[0]
}

// startProjector runs the projector on a connection of its own until ctx is cancelled.
func (h *harness) startProjector(ctx context.Context, ledger projector.Ledger) <-chan error {
	h.t.Helper()
	conn, err := nats.Connect(h.url) // Run drains and closes it
	if err != nil {
		h.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		err := projector.Run(ctx, conn, &projector.Projector{Ledger: ledger, Changes: h.changes, Metrics: telemetry.New(nil),
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
		list, err := h.store.ListErrors(ctx, storage.ErrorFilter{Table: "item", Text: run, Limit: 1000})
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
	list, _ := h.store.ListErrors(ctx, storage.ErrorFilter{Table: "item", Text: run, Limit: 1000})
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

// An error event that cannot be stored because the database is down is retried, and acknowledged
// only once it is stored: in full, although by then the projector also tried (and failed) to keep
// it as a minimal row.
func TestAnErrorEventIsNeverAckedBeforeItIsStored(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store, js, nc := h.store, h.js, h.nc
	ledger := &flaky{Store: store}
	// Deliveries 1 and 2 fail; delivery 3 fails in full and as a minimal row; delivery 4 stores.
	ledger.failuresLeft.Store(4)
	done := h.startProjector(ctx, ledger)

	v := int64(1)
	key := fmt.Sprintf("V%x", time.Now().UnixNano()) // -count=N shares the database
	ev := domain.ErrorEvent{ID: "err-flaky-" + key, OccurredAt: time.Now().UTC(), Failure: *domain.MappingMissing("vendor"),
		Table: "vendor", Key: key, EventVersion: &v, Event: []byte(`{}`), Stage: "sync"}
	if err := (natsjs.Publisher{JS: js}).PublishError(ctx, ev); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		// The consumer first, the rows second: an ack seen before the rows are read must find
		// them stored (read the other way round, a store and ack between the reads look like an
		// ack before the store).
		legacy, _ := nc.JetStream()
		info, _ := legacy.ConsumerInfo(natsjs.ErrorsStream, natsjs.ProjectorConsumer)
		list, _ := store.ListErrors(ctx, storage.ErrorFilter{Table: "vendor", Key: key})
		if len(list) == 1 && info != nil && info.NumAckPending == 0 && info.NumPending == 0 {
			if ledger.calls.Load() < 5 || list[0].Occurrences != 1 || list[0].Kind != domain.KindMappingMissing {
				t.Fatalf("stored after %d calls as %s with %d occurrences; want at least 5 calls and the error in full, once", ledger.calls.Load(), list[0].Kind, list[0].Occurrences)
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
	if minimal, _ := store.ListErrors(ctx, storage.ErrorFilter{Table: "_errors", Limit: 1000}); containsEvent(minimal, ev.ID) {
		t.Fatal("a minimal row was stored although the error was stored in full")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// containsEvent reports whether one of the errors keeps bytes that mention s.
func containsEvent(list []storage.StoredError, s string) bool {
	for _, e := range list {
		if strings.Contains(string(e.Event), s) {
			return true
		}
	}
	return false
}

// An error that reaches the projector after its dependency was coupled is replayed at once;
// one that failed while the dependency was already coupled is not, or it would loop for ever.
func TestLateDependencyErrorIsReplayedOnce(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	run := fmt.Sprintf("run%x", time.Now().UnixNano())
	cur := run + "-CHF"
	coupledAt := h.coupleCurrency(cur)
	metrics, _, done := h.run(ctx)

	lookup := domain.Lookup{Source: "currencyCode", Table: "currency"}
	var replayable []byte
	waiting := func(key string, failedAt time.Time) {
		e := h.change("customer", key, 1, map[string]any{"number": key, "currencyCode": cur},
			domain.DependencyNotCoupled(domain.ChangeEvent{Table: "customer", Key: key}, lookup, cur))
		e.OccurredAt = failedAt
		if failedAt.Before(coupledAt) {
			replayable = e.Event
		}
		h.publishError(e)
	}
	before, after := run+"-before", run+"-after"
	waiting(before, coupledAt.Add(-time.Minute)) // failed, then the currency was coupled
	waiting(after, coupledAt.Add(time.Minute))   // failed although the currency was coupled
	waitFor(t, "both errors handled", func() bool {
		return h.stored("customer", before).ID != 0 && h.stored("customer", after).ID != 0 && h.consumerSettled()
	})
	if b, a := h.stored("customer", before), h.stored("customer", after); b.Status != storage.ErrorReplayed || b.Replays != 1 || a.Status != storage.ErrorOpen || a.Replays != 0 {
		t.Fatalf("failed before coupling: %s, %d replays; failed after: %s, %d replays; want replayed once and open", b.Status, b.Replays, a.Status, a.Replays)
	}
	if n := testutil.ToFloat64(metrics.Replays.WithLabelValues("dependency", string(replay.Published))); n != 1 {
		t.Fatalf("dvsync_replays_total{trigger=dependency,outcome=published} = %v, want 1", n)
	}
	msg, err := h.changes.GetLastMsgForSubject(ctx, "dvsync.changes.customer")
	if err != nil || string(msg.Data) != string(replayable) || msg.Header.Get(replay.HeaderReplayedBy) != replay.DependencyActor {
		t.Fatalf("replayed change: %v %v", msg, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A record fails with v5, then the error of its v4 arrives (published out of order, or
// redelivered): the error keeps v5, counts both, and the replay once the dependency is coupled
// sends v5.
func TestOlderErrorArrivingLateKeepsTheNewestChangeForReplay(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	run := fmt.Sprintf("run%x", time.Now().UnixNano())
	cust, cur := run+"-C1", run+"-USD"
	lookup := domain.Lookup{Source: "currencyCode", Table: "currency"}
	fail := func(v int64) domain.ErrorEvent {
		return h.change("customer", cust, v, map[string]any{"number": cust, "displayName": fmt.Sprintf("v%d", v), "currencyCode": cur},
			domain.DependencyNotCoupled(domain.ChangeEvent{Table: "customer", Key: cust}, lookup, cur))
	}
	v5, v4 := fail(5), fail(4)
	_, _, done := h.run(ctx)
	h.publishError(v5)
	waitFor(t, "the error of v5", func() bool { return h.stored("customer", cust).ID != 0 })
	h.publishError(v4)
	waitFor(t, "the error of v4 counted", func() bool { return h.stored("customer", cust).Occurrences == 2 && h.consumerSettled() })
	if e := h.stored("customer", cust); e.EventVersion == nil || *e.EventVersion != 5 || string(e.Event) != string(v5.Event) {
		t.Fatalf("the open error keeps %s, want version 5", e.Event)
	}

	h.coupleCurrency(cur)
	if err := (natsjs.Publisher{JS: h.js}).PublishSynced(ctx, "synced-"+cur, domain.RecordSynced{Table: "currency", Key: cur, Version: 1, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the waiting record replayed", func() bool { return h.stored("customer", cust).Status == storage.ErrorReplayed })
	msg, err := h.changes.GetLastMsgForSubject(ctx, "dvsync.changes.customer")
	if err != nil || string(msg.Data) != string(v5.Event) {
		t.Fatalf("replayed %s (%v), want v5: %s", msg.Data, err, v5.Event)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Error topics are not trusted: a forged error's embedded change is never replayed. Only a change
// read back from the changes stream, at the sequence the error names and matching it, is kept
// for replay, and its stored headers are scrubbed of credentials.
func TestForgedErrorEventsAreNotReplayed(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	run := fmt.Sprintf("run%x", time.Now().UnixNano())
	cur := run + "-GBP"
	coupledAt := h.coupleCurrency(cur)
	metrics, replayer, done := h.run(ctx)
	lookup := domain.Lookup{Source: "currencyCode", Table: "currency"}
	waitingFor := func(key string) *domain.Failure {
		return domain.DependencyNotCoupled(domain.ChangeEvent{Table: "customer", Key: key}, lookup, cur)
	}
	forgedBytes := []byte(`{"specversion":"1.0","id":"forged","type":"dvsync.record.deleted","source":"attacker","data":{"table":"customer","key":"X","version":99}}`)
	forge := func(name string, d domain.Delivery) domain.ErrorEvent {
		key := run + "-" + name
		v := int64(99)
		return domain.ErrorEvent{ID: "forged-" + key, OccurredAt: coupledAt.Add(-time.Minute), Failure: *waitingFor(key),
			Table: "customer", Key: key, EventVersion: &v, Stage: "sync", Event: forgedBytes, Delivery: d}
	}
	other := h.change("customer", run+"-other", 1, map[string]any{"number": "other"}, domain.MappingMissing("customer"))
	cases := map[string]domain.ErrorEvent{
		"no-reference": forge("no-reference", domain.Delivery{Subject: "dvsync.changes.customer"}),
		"gone":         forge("gone", domain.Delivery{Subject: "dvsync.changes.customer", Stream: natsjs.ChangesStream, Sequence: 1 << 40}),
		"another":      forge("another", other.Delivery), // a real message, of another record
	}
	// A real change whose error event carries other bytes: the stream's are kept and replayed.
	real := h.change("customer", run+"-real", 1, map[string]any{"number": "real", "currencyCode": cur}, waitingFor(run+"-real"))
	genuine := real.Event
	real.Event, real.EventHeaders, real.OccurredAt = forgedBytes, map[string][]string{"Ce-Type": {"dvsync.record.deleted"}}, coupledAt.Add(-time.Minute)
	for _, ev := range cases {
		h.publishError(ev)
	}
	h.publishError(real)
	waitFor(t, "every error handled", func() bool {
		for _, ev := range cases {
			if h.stored("customer", ev.Key).ID == 0 {
				return false
			}
		}
		return h.stored("customer", real.Key).Status == storage.ErrorReplayed && h.consumerSettled()
	})
	for name, ev := range cases {
		e := h.stored("customer", ev.Key)
		if e.Status != storage.ErrorOpen || e.NotReplayable == nil || string(e.Event) != string(forgedBytes) {
			t.Errorf("%s: stored %s, not replayable %v, event %s; want open, not replayable, its own copy kept for display", name, e.Status, e.NotReplayable, e.Event)
			continue
		}
		res := replayer.Replay(ctx, []int64{e.ID}, "otto")[0]
		if res.Outcome != replay.NotReplayable || res.Detail != *e.NotReplayable {
			t.Errorf("%s: a person's replay: %+v, want not_replayable saying %q", name, res, *e.NotReplayable)
		}
		t.Logf("%s: %s", name, *e.NotReplayable)
	}
	if n := testutil.ToFloat64(metrics.Replays.WithLabelValues("dependency", string(replay.Published))); n != 1 {
		t.Fatalf("dependency replays published = %v, want 1 (the real change only)", n)
	}
	msg, err := h.changes.GetLastMsgForSubject(ctx, "dvsync.changes.customer")
	if err != nil || string(msg.Data) != string(genuine) || msg.Header.Get("Ce-Type") != "" {
		t.Fatalf("replayed %s with headers %v (%v); want the change as the stream holds it", msg.Data, msg.Header, err)
	}
	d, err := h.store.GetError(ctx, h.stored("customer", real.Key).ID)
	if err != nil || d.EventHeaders["Authorization"][0] != redact.Redacted || d.EventHeaders["Dvsync-Correlation-Id"][0] == "" {
		t.Fatalf("stored headers %v (%v): want the stream's, credentials removed", d.EventHeaders, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Poison error events (a NUL in the event id, a header or the key, a lookup value or key far
// longer than an index entry, a status no integer column holds) must not stop the ledger: each
// is stored, as well as it can be, and every good event after them too. Before, each failed for
// ever, and after 64 of them (MaxAckPending) nothing was stored any more.
func TestPoisonErrorEventsDoNotStopTheLedger(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	run := fmt.Sprintf("run%x", time.Now().UnixNano())
	long := incompressible(10000) // PostgreSQL compresses index entries: a repeated letter would fit
	poison := []func(*domain.ErrorEvent){
		func(e *domain.ErrorEvent) { e.EventID = "id\x00nul" },
		func(e *domain.ErrorEvent) { e.ID += "\x00" },
		func(e *domain.ErrorEvent) { e.Key += "\x00nul" },
		func(e *domain.ErrorEvent) { e.EventHeaders = map[string][]string{"X-Note": {"a\x00b"}} },
		func(e *domain.ErrorEvent) { e.Key += long },
		func(e *domain.ErrorEvent) { e.ID += long },
		func(e *domain.ErrorEvent) {
			e.Failure = *domain.DependencyNotCoupled(domain.ChangeEvent{Table: "item", Key: e.Key}, domain.Lookup{Source: "u", Table: "unitOfMeasure"}, long)
		},
		func(e *domain.ErrorEvent) { e.Details = map[string]string{"note\x00": "x"} },
		func(e *domain.ErrorEvent) { e.CallStack = []domain.Stage{{Name: "sync", Detail: "nul\x00"}} },
		func(e *domain.ErrorEvent) { e.Dataverse = &domain.DataverseError{Status: 1 << 40, Message: "m\x00"} },
	}
	const bad, good = 70, 10
	v := int64(1)
	event := func(i int) domain.ErrorEvent {
		return domain.ErrorEvent{ID: fmt.Sprintf("%s-%d", run, i), OccurredAt: time.Now().UTC(), Failure: *domain.MappingMissing("item"),
			Table: "item", Key: fmt.Sprintf("%s-%d", run, i), EventVersion: &v, Event: []byte(`{}`), Stage: "sync"}
	}
	for i := range bad + good {
		ev := event(i)
		if i < bad {
			poison[i%len(poison)](&ev)
		}
		data, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		// Published as raw bytes: a NUL cannot go into a Nats-Msg-Id header.
		if _, err := h.js.Publish(ctx, natsjs.ErrorSubject(ev.Class, ev.Table), data); err != nil {
			t.Fatal(err)
		}
	}
	done := h.startProjector(ctx, h.store)
	rows := func() []storage.StoredError {
		list, err := h.store.ListErrors(ctx, storage.ErrorFilter{Table: "item", Text: run, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		return list
	}
	waitFor(t, "every error event stored", func() bool { return len(rows()) == bad+good && h.consumerSettled() })
	for i := bad; i < bad+good; i++ {
		if e := h.stored("item", fmt.Sprintf("%s-%d", run, i)); e.Kind != domain.KindMappingMissing {
			t.Fatalf("good event %d stored as %+v", i, e)
		}
	}
	for _, e := range rows() {
		if e.Kind == domain.KindInvalidEvent || strings.Contains(e.Key, "\x00") || len(e.Key) > 9000 {
			t.Fatalf("poison stored as %s with a key of %d bytes; want its own kind, clean and bounded", e.Kind, len(e.Key))
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// refusing is the real ledger with faults for chosen events: a PostgreSQL data error, or a
// failure no retry heals.
type refusing struct {
	*postgres.Store
	mu    sync.Mutex
	calls map[string]int
}

func (r *refusing) RecordErrorChecked(ctx context.Context, ev domain.ErrorEvent, notReplayable string) error {
	r.mu.Lock()
	r.calls[ev.ID]++
	r.mu.Unlock()
	switch {
	case strings.HasPrefix(ev.ID, "refused-data"):
		pg := &pgconn.PgError{Code: "22021", Message: "invalid byte sequence for encoding \"UTF8\": 0x00"}
		return &storage.RejectedError{Reason: fmt.Sprintf("PostgreSQL refused a value: %s (SQLSTATE %s)", pg.Message, pg.Code),
			Err: fmt.Errorf("postgres: record error: %w", pg)}
	case strings.HasPrefix(ev.ID, "refused-always"):
		return errors.New("postgres: record error: something no retry heals")
	}
	return r.Store.RecordErrorChecked(ctx, ev, notReplayable)
}

func (r *refusing) callsOf(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[id]
}

// A message PostgreSQL refuses is kept at once as a minimal invalid_event row with its bytes; one
// that keeps failing otherwise is kept so after a few deliveries; both are counted, and the
// events after them are stored.
func TestUnstorableErrorEventsAreKeptAsMinimalRows(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	run := fmt.Sprintf("run%x", time.Now().UnixNano())
	ledger := &refusing{Store: h.store, calls: map[string]int{}}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	metrics := telemetry.New(nil)
	conn, err := nats.Connect(h.url)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- projector.Run(ctx, conn, &projector.Projector{Ledger: ledger, Changes: h.changes, Metrics: metrics, Log: log})
	}()
	v := int64(1)
	payloads := map[string][]byte{}
	for _, id := range []string{"refused-data-" + run, "refused-always-" + run, "fine-" + run} {
		ev := domain.ErrorEvent{ID: id, OccurredAt: time.Now().UTC(), Failure: *domain.MappingMissing("item"),
			Table: "item", Key: id, EventVersion: &v, Stage: "sync"}
		h.publishError(ev)
		payloads[id], _ = json.Marshal(ev)
	}
	minimal := func(id string) *storage.StoredError {
		list, _ := h.store.ListErrors(ctx, storage.ErrorFilter{Table: "_errors", Kind: domain.KindInvalidEvent, Limit: 1000})
		for _, e := range list {
			if string(e.Event) == string(payloads[id]) {
				return &e
			}
		}
		return nil
	}
	waitFor(t, "the good event stored", func() bool { return h.stored("item", "fine-"+run).ID != 0 })
	waitFor(t, "the refused event kept", func() bool { return minimal("refused-data-"+run) != nil })
	if n := ledger.callsOf("refused-data-" + run); n != 1 {
		t.Fatalf("a data error was tried %d times, want once: it is permanent", n)
	}
	waitFor(t, "the failing event kept", func() bool { return minimal("refused-always-"+run) != nil && h.consumerSettled() })
	if n := ledger.callsOf("refused-always-" + run); n != 3 {
		t.Fatalf("a failing event was tried %d times before it was kept, want 3", n)
	}
	if e := minimal("refused-data-" + run); e.Class != domain.ClassSetup || !strings.Contains(e.Message, "22021") {
		t.Fatalf("minimal row: %+v", e)
	}
	if d, r := testutil.ToFloat64(metrics.ErrorsUnstorable.WithLabelValues("data")), testutil.ToFloat64(metrics.ErrorsUnstorable.WithLabelValues("retries")); d != 1 || r != 1 {
		t.Fatalf("dvsync_errors_unstorable_total data=%v retries=%v, want 1 and 1", d, r)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// incompressible is n random hex digits.
func incompressible(n int) string {
	b := make([]byte, (n+1)/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

// Forged messages naming a dependency no record can have (a NUL in a resolution's key, or in a
// dependency_not_coupled error's dependency_key) are stored, and the dependency replay they would
// trigger is skipped. Before, the replay looked the raw key up, PostgreSQL refused it (SQLSTATE
// 22021) and the message was nacked for ever: after 64 of them (MaxAckPending) the ledger stored
// nothing more.
func TestForgedDependencyKeysDoNotStallTheProjector(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	run := fmt.Sprintf("run%x", time.Now().UnixNano())
	for i := range 70 {
		data := fmt.Sprintf(`{"table":"customer","key":"%s-%d\u0000","version":1}`, run, i)
		if _, err := h.js.Publish(ctx, natsjs.ResolvedSubject("customer"), []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	v := int64(1)
	waiting := domain.ErrorEvent{ID: run + "-waiting", OccurredAt: time.Now().UTC(), Table: "customer", Key: run + "-waiting",
		EventVersion: &v, Event: []byte(`{}`), Stage: "sync",
		Failure: *domain.DependencyNotCoupled(domain.ChangeEvent{Table: "customer", Key: run + "-waiting"},
			domain.Lookup{Source: "currencyCode", Table: "currency"}, "EUR\x00")}
	data, err := json.Marshal(waiting)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.js.Publish(ctx, natsjs.ErrorSubject(waiting.Class, waiting.Table), data); err != nil {
		t.Fatal(err)
	}
	good := domain.ErrorEvent{ID: run + "-good", OccurredAt: time.Now().UTC(), Failure: *domain.MappingMissing("item"),
		Table: "item", Key: run + "-good", EventVersion: &v, Event: []byte(`{}`), Stage: "sync"}
	h.publishError(good)
	metrics, _, done := h.run(ctx)
	waitFor(t, "the good error stored and every message acknowledged", func() bool {
		return h.stored("item", good.Key).ID != 0 && h.consumerSettled()
	})
	if n := testutil.ToFloat64(metrics.Replays.WithLabelValues("dependency", string(replay.GivenUp))); n != 0 {
		t.Fatalf("%v dependency replays given up; want none tried: no record has such a key", n)
	}
	if e := h.stored("customer", waiting.Key); e.Kind != domain.KindDependencyNotCoupled || strings.Contains(e.Details["dependency_key"], "\x00") {
		t.Fatalf("the error waiting on a key with a NUL: stored as %s, dependency key %q; want dependency_not_coupled, cleaned", e.Kind, e.Details["dependency_key"])
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A dependency replay that keeps failing (here: the replayer cannot publish) is retried for a few
// deliveries, then given up, counted and acknowledged; the waiting error stays open and
// replayable, and the errors behind it are stored. Before, the message was nacked for ever.
func TestAFailingDependencyReplayIsGivenUpAfterAFewDeliveries(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	run := fmt.Sprintf("run%x", time.Now().UnixNano())
	cur := run + "-SEK"
	coupledAt := h.coupleCurrency(cur)
	cust := run + "-C1"
	waiting := h.change("customer", cust, 1, map[string]any{"number": cust, "currencyCode": cur},
		domain.DependencyNotCoupled(domain.ChangeEvent{Table: "customer", Key: cust}, domain.Lookup{Source: "currencyCode", Table: "currency"}, cur))
	waiting.OccurredAt = coupledAt.Add(-time.Minute) // failed before the currency was coupled: replayed at once
	h.publishError(waiting)

	closed, err := nats.Connect(h.url)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(closed)
	closed.Close() // every publish fails
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	metrics := telemetry.New(nil)
	conn, err := nats.Connect(h.url)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- projector.Run(ctx, conn, &projector.Projector{Ledger: h.store, Changes: h.changes, Metrics: metrics, Log: log,
			Dependents: &replay.Replayer{Store: h.store, JS: js, Log: log, Metrics: metrics}})
	}()
	good := domain.ErrorEvent{ID: run + "-good", OccurredAt: time.Now().UTC(), Failure: *domain.MappingMissing("item"),
		Table: "item", Key: run + "-good", Event: []byte(`{}`), Stage: "sync"}
	h.publishError(good)
	waitFor(t, "every message acknowledged", func() bool { return h.stored("item", good.Key).ID != 0 && h.consumerSettled() })
	e := h.stored("customer", cust)
	if e.Status != storage.ErrorOpen || e.NotReplayable != nil || e.Replays != 3 {
		t.Fatalf("the waiting error: %s, not replayable %v, %d replays; want open, replayable, tried on 3 deliveries", e.Status, e.NotReplayable, e.Replays)
	}
	if n := testutil.ToFloat64(metrics.Replays.WithLabelValues("dependency", string(replay.GivenUp))); n != 1 {
		t.Fatalf(`dvsync_replays_total{trigger="dependency",outcome="given_up"} = %v, want 1`, n)
	}
	if n := testutil.ToFloat64(metrics.Replays.WithLabelValues("dependency", string(replay.Failed))); n != 3 {
		t.Fatalf(`dvsync_replays_total{trigger="dependency",outcome="failed"} = %v, want 3`, n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// panicking is the real ledger and replayer, with a panic for chosen events and dependencies.
type panicking struct {
	*postgres.Store
	replay projector.DependentReplayer
	mu     sync.Mutex
	calls  map[string]int
}

func (p *panicking) count(name string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls[name]++
	return p.calls[name]
}

func (p *panicking) RecordErrorChecked(ctx context.Context, ev domain.ErrorEvent, notReplayable string) error {
	if strings.HasPrefix(ev.ID, "panics-") {
		p.count(ev.ID)
		panic("a bug storing " + ev.ID)
	}
	return p.Store.RecordErrorChecked(ctx, ev, notReplayable)
}

func (p *panicking) ReplayWaitingOn(ctx context.Context, table, key string, failedAt time.Time) (int, error) {
	if strings.HasPrefix(key, "panics-") {
		p.count(key)
		panic("a bug replaying what waits on " + key)
	}
	return p.replay.ReplayWaitingOn(ctx, table, key, failedAt)
}

// A panic while storing a message, or while replaying what waited for a dependency, takes the
// way out of any other failure that does not heal: a few deliveries, then a minimal row (storing)
// or a replay given up (replaying), and the message is acknowledged. Before, the panic became a
// nack every time, and the message was redelivered for ever.
func TestAPanicTakesTheFallbackNotARedeliveryLoop(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	run := fmt.Sprintf("run%x", time.Now().UnixNano())
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	metrics := telemetry.New(nil)
	faults := &panicking{Store: h.store, replay: &replay.Replayer{Store: h.store, JS: h.js, Log: log, Metrics: metrics}, calls: map[string]int{}}
	conn, err := nats.Connect(h.url)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- projector.Run(ctx, conn, &projector.Projector{Ledger: faults, Changes: h.changes, Metrics: metrics, Log: log, Dependents: faults})
	}()
	v := int64(1)
	bad := domain.ErrorEvent{ID: "panics-" + run, OccurredAt: time.Now().UTC(), Failure: *domain.MappingMissing("item"),
		Table: "item", Key: run + "-bad", EventVersion: &v, Stage: "sync"}
	h.publishError(bad)
	payload, _ := json.Marshal(bad)
	dependency := "panics-" + run + "-EUR"
	if err := (natsjs.Publisher{JS: h.js}).PublishSynced(ctx, "synced-"+run, domain.RecordSynced{Table: "currency", Key: dependency, Version: 1, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	good := domain.ErrorEvent{ID: run + "-good", OccurredAt: time.Now().UTC(), Failure: *domain.MappingMissing("item"),
		Table: "item", Key: run + "-good", EventVersion: &v, Stage: "sync"}
	h.publishError(good)
	waitFor(t, "every message acknowledged", func() bool { return h.stored("item", good.Key).ID != 0 && h.consumerSettled() })
	minimal, _ := h.store.ListErrors(ctx, storage.ErrorFilter{Table: "_errors", Kind: domain.KindInvalidEvent, Limit: 1000})
	kept := false
	for _, e := range minimal {
		kept = kept || string(e.Event) == string(payload)
	}
	if !kept {
		t.Fatal("the error event whose storing panicked was not kept as a minimal row")
	}
	faults.mu.Lock()
	stored, replayed := faults.calls[bad.ID], faults.calls[dependency]
	faults.mu.Unlock()
	if stored != fallbackAfter || replayed != fallbackAfter {
		t.Fatalf("storing panicked %d times, replaying %d times; want %d each, then the fallback", stored, replayed, fallbackAfter)
	}
	if r, g := testutil.ToFloat64(metrics.ErrorsUnstorable.WithLabelValues("retries")), testutil.ToFloat64(metrics.Replays.WithLabelValues("dependency", string(replay.GivenUp))); r != 1 || g != 1 {
		t.Fatalf("dvsync_errors_unstorable_total{cause=retries} = %v, dependency replays given up = %v; want 1 and 1", r, g)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// fallbackAfter is the projector's: the delivery on which it stops retrying.
const fallbackAfter = 3

// The window of a NATS leader loss: the errors of a customer's first failures are lost or reach
// the projector late, so the first error of the record the ledger stores is the one of a change
// held back because the record is skipped. That error names the dependency too (as the worker's
// syncer reports it), so the record is replayed once its currency is coupled, whether the
// currency was coupled after the error was stored or before it.
func TestASkippedRecordWhoseFirstErrorsWereLostWaitsForItsDependency(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	run := fmt.Sprintf("run%x", time.Now().UnixNano())
	lookup := domain.Lookup{Source: "currencyCode", Table: "currency"}
	fail := func(cust, cur string, v int64, skipped bool) domain.ErrorEvent {
		ce := domain.ChangeEvent{Table: "customer", Key: cust}
		f := domain.DependencyNotCoupled(ce, lookup, cur)
		if skipped {
			f = domain.RecordSkipped(ce, domain.KindDependencyNotCoupled, 2, f)
		}
		e := h.change("customer", cust, v, map[string]any{"number": cust, "displayName": fmt.Sprintf("v%d", v), "currencyCode": cur}, f)
		if skipped {
			e.Stage = "skipped"
		}
		return e
	}
	_, _, done := h.run(ctx)

	// Coupled after the error was stored: the currency's resolution replays the record's newest
	// change, although the error of its v1 (naming the currency) came after the skipped v2's.
	late, usd := run+"-C1", run+"-USD"
	v1, v2 := fail(late, usd, 1, false), fail(late, usd, 2, true)
	h.publishError(v2)
	waitFor(t, "the skipped change's error", func() bool { return h.stored("customer", late).ID != 0 })
	h.publishError(v1)
	waitFor(t, "the older error counted", func() bool { return h.stored("customer", late).Occurrences == 2 && h.consumerSettled() })
	if e := h.stored("customer", late); e.Status != storage.ErrorOpen || e.Details["dependency_key"] != usd || string(e.Event) != string(v2.Event) {
		t.Fatalf("the skipped record's error: %s, dependency %q, keeps %s; want open, waiting on %s, with v2", e.Status, e.Details["dependency_key"], e.Event, usd)
	}
	h.coupleCurrency(usd)
	if err := (natsjs.Publisher{JS: h.js}).PublishSynced(ctx, "synced-"+usd, domain.RecordSynced{Table: "currency", Key: usd, Version: 1, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the skipped record replayed", func() bool { return h.stored("customer", late).Status == storage.ErrorReplayed })
	if msg, err := h.changes.GetLastMsgForSubject(ctx, "dvsync.changes.customer"); err != nil || string(msg.Data) != string(v2.Event) || msg.Header.Get(replay.HeaderReplayedBy) != replay.DependencyActor {
		t.Fatalf("replayed %v (%v), want v2 by the dependency replay: %s", msg, err, v2.Event)
	}

	// Coupled before the error was stored (its replay has run): storing the error replays it.
	early, eur := run+"-C2", run+"-EUR"
	skipped := fail(early, eur, 2, true)
	skipped.OccurredAt = h.coupleCurrency(eur).Add(-time.Minute) // held back, then the currency was coupled
	h.publishError(skipped)
	waitFor(t, "the late skipped error replayed", func() bool { return h.stored("customer", early).Status == storage.ErrorReplayed })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
