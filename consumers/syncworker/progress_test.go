package syncworker

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dvsync/dvsync/infra/natsjs"
	"github.com/dvsync/dvsync/infra/sqlite"
	"github.com/dvsync/dvsync/infra/storage"
)

// progressStore is the embedded store with Synced: nothing is synced in these tests.
type progressStore struct{ *sqlite.Store }

func (progressStore) Synced(context.Context, string) (bool, error) { return false, nil }

// jsPosition reads the workers' consumer through natsjs, as cmd/dvsync does.
type jsPosition struct{ js jetstream.JetStream }

func (p jsPosition) Position(ctx context.Context) (uint64, uint64, error) {
	pos, err := natsjs.WorkerPosition(ctx, p.js)
	return pos.Delivered, pos.FirstSeq, err
}
func (p jsPosition) Waiting(ctx context.Context, table string, delivered uint64) (uint64, error) {
	return natsjs.TableWaiting(ctx, p.js, table, delivered)
}
func (p jsPosition) FromAckFloor(ctx context.Context, table string) (uint64, error) {
	return natsjs.TableBacklog(ctx, p.js, table)
}

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
	p := &Progress{Store: progressStore{store}, Stream: jsPosition{js}, Tables: []string{"currency"}, Every: time.Second,
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
