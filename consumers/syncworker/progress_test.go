package syncworker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dvsync/dvsync/infra/natsjs"
	"github.com/dvsync/dvsync/infra/sqlite"
	"github.com/dvsync/dvsync/infra/storage"
	"github.com/dvsync/dvsync/infra/telemetry"
)

// progressStore is the embedded store with Synced: nothing is synced in these tests.
type progressStore struct{ *sqlite.Store }

func (progressStore) Synced(context.Context, string) (bool, error) { return false, nil }

// A backlog period opens with the changes waiting and in hand, counts only acked changes as
// done, ends once nothing is waiting or in hand; a pause ends it, and so does a stream whose
// sequences are behind the period's start (recreated).
func TestProgressOpensCountsAndEndsABacklogPeriod(t *testing.T) {
	srv, err := natsjs.StartEmbedded("127.0.0.1", -1, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close(); srv.Shutdown(); srv.WaitForShutdown() })
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if err := natsjs.Ensure(ctx, js, natsjs.DefaultTopology()); err != nil {
		t.Fatal(err)
	}
	store, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "dvsync.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	paused := false
	p := &Progress{Store: progressStore{store}, Stream: &natsjs.WorkerStream{JS: js}, Tables: []string{"currency"}, Every: time.Second,
		Threshold: 100, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Paused: func(string) bool { return paused }}
	period := func() (storage.BacklogPeriod, bool) {
		t.Helper()
		all, err := store.BacklogPeriods(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, pr := range all {
			if pr.Table == "currency" {
				return pr, true
			}
		}
		return storage.BacklogPeriod{}, false
	}
	tick := func() {
		t.Helper()
		if err := p.Tick(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for range 5 {
		if _, err := js.Publish(ctx, "dvsync.changes.currency", []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	c, err := js.Consumer(ctx, natsjs.ChangesStream, natsjs.WorkerConsumer)
	if err != nil {
		t.Fatal(err)
	}
	fetch := func(n int) []jetstream.Msg {
		t.Helper()
		b, err := c.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var out []jetstream.Msg
		for m := range b.Messages() {
			p.held(m.Subject())
			out = append(out, m)
		}
		if len(out) != n {
			t.Fatalf("fetched %d, want %d", len(out), n)
		}
		return out
	}
	finish := func(ms []jetstream.Msg) {
		t.Helper()
		for _, m := range ms {
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
			p.ackedOne(m.Subject())
			p.released(m.Subject())
		}
	}

	first := fetch(2)
	tick() // nothing synced of currency and a backlog: a first load of 3 waiting + 2 in hand
	if pr, ok := period(); !ok || pr.Kind != storage.BacklogLoading || pr.Total != 5 || pr.Left != 5 || pr.Done != 0 {
		t.Fatalf("opened period = %+v, %v", pr, ok)
	}
	tick()
	if pr, _ := period(); pr.Done != 0 || pr.Left != 5 {
		t.Fatalf("changes in hand counted as done: %+v", pr)
	}
	finish(first)
	tick()
	if pr, ok := period(); !ok || pr.Done != 2 || pr.Left != 3 {
		t.Fatalf("after two acks = %+v, %v", pr, ok)
	}
	rest := fetch(3)
	tick()
	if pr, ok := period(); !ok || pr.Done != 2 || pr.Left != 3 {
		t.Fatalf("with the rest in hand = %+v, %v; want it open with 3 left", pr, ok)
	}
	finish(rest)
	tick()
	if pr, ok := period(); ok {
		t.Fatalf("nothing waiting or in hand, and the period is open: %+v", pr)
	}

	// A pause ends a period, and the keeper opens none for a paused table.
	if _, err := store.StartBacklog(ctx, "currency", storage.BacklogCatchingUp, 10, 5); err != nil {
		t.Fatal(err)
	}
	if _, err := store.PauseTable(ctx, "currency", "ada"); err != nil {
		t.Fatal(err)
	}
	paused = true
	for range 2 {
		if _, err := js.Publish(ctx, "dvsync.changes.currency", []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	tick()
	if pr, ok := period(); ok {
		t.Fatalf("a paused table has a period: %+v", pr)
	}

	// A period from before the stream was recreated (its start is past the delivered position).
	paused = false
	if _, err := store.StartBacklog(ctx, "currency", storage.BacklogCatchingUp, 10, 1000); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < everyTable; i++ {
		tick()
	}
	pr, ok := period()
	if ok && pr.StartSeq == 1000 {
		t.Fatalf("a period of a recreated stream stays open: %+v", pr)
	}
	if !ok || pr.Total != 2 || pr.Kind != storage.BacklogLoading {
		t.Fatalf("after the recreated stream's period the 2 waiting changes make a period: %+v, %v", pr, ok)
	}
}

// progressRig is a changes stream on a real NATS and an embedded store, shared by the keepers
// (workers) a test makes.
type progressRig struct {
	t     *testing.T
	nc    *nats.Conn
	js    jetstream.JetStream
	store *sqlite.Store
	c     jetstream.Consumer
}

func newProgressRig(t *testing.T) *progressRig {
	srv, err := natsjs.StartEmbedded("127.0.0.1", -1, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close(); srv.Shutdown(); srv.WaitForShutdown() })
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if err := natsjs.Ensure(ctx, js, natsjs.DefaultTopology()); err != nil {
		t.Fatal(err)
	}
	store, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "dvsync.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	c, err := js.Consumer(ctx, natsjs.ChangesStream, natsjs.WorkerConsumer)
	if err != nil {
		t.Fatal(err)
	}
	return &progressRig{t: t, nc: nc, js: js, store: store, c: c}
}

func (r *progressRig) keeper(store BacklogStore) *Progress {
	if store == nil {
		store = progressStore{r.store}
	}
	return &Progress{Store: store, Stream: &natsjs.WorkerStream{JS: r.js}, Tables: []string{"currency"}, Every: time.Second,
		Threshold: 100, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

func (r *progressRig) publish(n int) {
	r.t.Helper()
	for range n {
		if _, err := r.js.Publish(context.Background(), "dvsync.changes.currency", []byte("{}")); err != nil {
			r.t.Fatal(err)
		}
	}
}

// fetch hands n changes to the keeper's worker.
func (r *progressRig) fetch(p *Progress, n int) []jetstream.Msg {
	r.t.Helper()
	b, err := r.c.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		r.t.Fatal(err)
	}
	var out []jetstream.Msg
	for m := range b.Messages() {
		p.held(m.Subject())
		out = append(out, m)
	}
	if len(out) != n {
		r.t.Fatalf("fetched %d, want %d", len(out), n)
	}
	return out
}

func (r *progressRig) finish(p *Progress, ms []jetstream.Msg) {
	r.t.Helper()
	for _, m := range ms {
		if err := m.DoubleAck(context.Background()); err != nil {
			r.t.Fatal(err)
		}
		p.ackedOne(m.Subject())
		p.released(m.Subject())
	}
}

func (r *progressRig) tick(p *Progress) {
	r.t.Helper()
	if err := p.Tick(context.Background()); err != nil {
		r.t.Fatal(err)
	}
}

func (r *progressRig) period() (storage.BacklogPeriod, bool) {
	r.t.Helper()
	all, err := r.store.BacklogPeriods(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	for _, pr := range all {
		if pr.Table == "currency" {
			return pr, true
		}
	}
	return storage.BacklogPeriod{}, false
}

// consumerCreations counts the requests to create a consumer on the changes stream: each is a
// proposal to the meta leader of a clustered JetStream.
func (r *progressRig) consumerCreations() func() int {
	r.t.Helper()
	var subs []*nats.Subscription
	for _, subject := range []string{"$JS.API.CONSUMER.CREATE." + natsjs.ChangesStream, "$JS.API.CONSUMER.CREATE." + natsjs.ChangesStream + ".>"} {
		sub, err := r.nc.SubscribeSync(subject)
		if err != nil {
			r.t.Fatal(err)
		}
		subs = append(subs, sub)
	}
	if err := r.nc.Flush(); err != nil {
		r.t.Fatal(err)
	}
	return func() int {
		r.t.Helper()
		// A request reaches this connection before its answer does: once a count returned, its
		// creation is pending here.
		if err := r.nc.Flush(); err != nil {
			r.t.Fatal(err)
		}
		n := 0
		for _, sub := range subs {
			pending, _, err := sub.Pending()
			if err != nil {
				r.t.Fatal(err)
			}
			n += pending
		}
		return n
	}
}

// With several workers one counts (the holder of the store's lease); the others only report, and
// cost JetStream nothing. A table with no change after the position costs no consumer either.
func TestOneWorkerCountsAndQuietTablesCostNoConsumer(t *testing.T) {
	r := newProgressRig(t)
	created := r.consumerCreations()
	a, b := r.keeper(nil), r.keeper(nil)
	r.publish(5)
	r.tick(a) // a takes the lease and opens the first load
	if pr, ok := r.period(); !ok || pr.Total != 5 {
		t.Fatalf("period = %+v, %v", pr, ok)
	}
	if created() == 0 {
		t.Fatal("the counter counted 5 waiting changes without a consumer: the test counts nothing")
	}
	before := created()
	for range everyTable + 1 {
		r.tick(b)
	}
	if n := created() - before; n != 0 {
		t.Fatalf("a worker without the counting lease created %d consumers", n)
	}
	// All handled (by b): the period ends, and then a quiet table costs no consumer at any tick.
	r.finish(b, r.fetch(b, 5))
	r.tick(b)
	r.tick(a)
	if pr, ok := r.period(); ok {
		t.Fatalf("nothing left and the period is open: %+v", pr)
	}
	before = created()
	for range everyTable + 1 {
		r.tick(a)
	}
	if n := created() - before; n != 0 {
		t.Fatalf("counting a table with nothing after the position created %d consumers", n)
	}
}

// At the tail of a period, while another worker still holds the table's changes, the counter
// (holding none) keeps the period open: it ends only when no fresh report holds any.
func TestAPeriodEndsOnlyWhenNoWorkerHoldsItsChanges(t *testing.T) {
	r := newProgressRig(t)
	a, b := r.keeper(nil), r.keeper(nil)
	r.publish(2)
	r.tick(a) // a counts: a first load of 2
	r.publish(5)
	ms := r.fetch(b, 7)
	r.finish(b, ms[:4]) // done 4, past the total of 2; b holds 3
	r.tick(b)
	r.tick(a)
	pr, ok := r.period()
	if !ok || pr.Done != 4 || pr.Left != 3 {
		t.Fatalf("with 3 in b's hand the period = %+v, %v; want open, done 4, left 3", pr, ok)
	}
	r.finish(b, ms[4:])
	r.tick(b)
	r.tick(a)
	if pr, ok := r.period(); ok {
		t.Fatalf("nothing in hand or waiting, and the period is open: %+v", pr)
	}
}

// failingReports fails the next reports while fail is set.
type failingReports struct {
	progressStore
	fail bool
}

func (f *failingReports) ReportBacklog(ctx context.Context, worker string, inHand, acked map[string]uint64) error {
	if f.fail {
		return errors.New("the database is away")
	}
	return f.progressStore.ReportBacklog(ctx, worker, inHand, acked)
}

// Acks a failed tick could not store are stored by the next; an ack not sent is not counted.
func TestAcksOfAFailedTickAreCountedByTheNext(t *testing.T) {
	r := newProgressRig(t)
	store := &failingReports{progressStore: progressStore{r.store}}
	p := r.keeper(store)
	r.publish(4)
	r.tick(p)
	r.finish(p, r.fetch(p, 2))
	store.fail = true
	if err := p.Tick(context.Background()); err == nil {
		t.Fatal("the failing report did not fail the tick")
	}
	store.fail = false
	r.tick(p)
	if pr, ok := r.period(); !ok || pr.Done != 2 || pr.Left != 2 {
		t.Fatalf("after a failed tick and a good one the period = %+v, %v; want done 2, left 2", pr, ok)
	}
}

// The lanes' hooks run at once on many goroutines (-race), and a keeper without an interval runs.
func TestProgressHooksAreSafeAcrossLanesAndRunNeedsNoInterval(t *testing.T) {
	p := &Progress{Tables: []string{"currency", "customer"}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				p.held("dvsync.changes.currency")
				p.ackedOne("dvsync.changes.currency")
				p.released("dvsync.changes.currency")
				p.held("dvsync.changes.unmapped")
			}
		})
	}
	wg.Wait()
	inHand, acked := p.take()
	if inHand["currency"] != 0 || acked["currency"] != 8000 || len(inHand) != 0 {
		t.Fatalf("in hand %v, acked %v; want nothing in hand and 8000 acked", inHand, acked)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	store, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "dvsync.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	p.Store = progressStore{store}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if v := recover(); v != nil {
				t.Errorf("Run without an interval panicked: %v", v)
			}
		}()
		p.Run(ctx)
	}()
	<-done
}

// A worker that stops reports its last acks and gives the counting lease up: another worker
// counts at its next tick, not once the lease ran out.
func TestAStoppingCounterHandsTheCountingOver(t *testing.T) {
	r := newProgressRig(t)
	a, b := r.keeper(nil), r.keeper(nil)
	a.Every = 20 * time.Millisecond
	r.publish(5)
	ms := r.fetch(a, 2)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok := r.period(); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the running keeper opened no period")
		}
		time.Sleep(10 * time.Millisecond) // polling a condition with a deadline
	}
	r.finish(a, ms)
	cancel()
	<-done
	if pr, ok := r.period(); !ok || pr.Done != 2 {
		t.Fatalf("the stopped keeper's last acks: %+v, %v; want done 2", pr, ok)
	}
	if _, err := r.store.EndBacklog(context.Background(), "currency"); err != nil {
		t.Fatal(err)
	}
	r.tick(b)
	if pr, ok := r.period(); !ok || pr.Total != 3 {
		t.Fatalf("the next worker did not count at its first tick: %+v, %v", pr, ok)
	}
}

// ackMsg is a change whose ack is sent or not.
type ackMsg struct {
	jetstream.Msg
	err error
}

func (m ackMsg) Ack() error    { return m.err }
func (ackMsg) Subject() string { return "dvsync.changes.currency" }

// Only an ack sent counts as done: an ack that failed is redelivered, found stale and acked
// again, and that ack counts.
func TestOnlyAnAckSentCountsAsDone(t *testing.T) {
	p := &Progress{Tables: []string{"currency"}}
	w := &Worker{Progress: p, Metrics: telemetry.New([]string{"currency"})}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	w.ack(log, job{msg: ackMsg{err: errors.New("connection closed")}, meta: &jetstream.MsgMetadata{}}, "synced")
	w.ack(log, job{msg: ackMsg{}, meta: &jetstream.MsgMetadata{}}, "stale")
	if _, acked := p.take(); acked["currency"] != 1 {
		t.Fatalf("acked = %v, want the one sent", acked)
	}
}
