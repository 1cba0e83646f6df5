package main

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dvsync/dvsync/consumers/replay"
	"github.com/dvsync/dvsync/infra/natsjs"
	"github.com/dvsync/dvsync/infra/sqlite"
	"github.com/dvsync/dvsync/infra/storage"
)

// Many status views at once cost JetStream one reading: the others share it (singleflight), and
// the ones after it take it from the cache until the TTL runs out.
func TestStatusViewsShareOneJetStreamReading(t *testing.T) {
	v := &streamView{ttl: time.Hour}
	var reads atomic.Int32
	release := make(chan struct{})
	read := func(context.Context) (any, error) {
		reads.Add(1)
		<-release
		return uint64(7), nil
	}
	var wg sync.WaitGroup
	results := make(chan any, 20)
	for range 20 {
		wg.Go(func() {
			got, err := v.get(context.Background(), "lag", read)
			if err != nil {
				t.Error(err)
			}
			results <- got
		})
	}
	// Let the first reading finish once every viewer is waiting on it or will find it cached.
	deadline := time.Now().Add(10 * time.Second)
	for reads.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // polling a counter, not synchronising on time
	}
	close(release)
	wg.Wait()
	close(results)
	for got := range results {
		if got != uint64(7) {
			t.Fatalf("a viewer got %v", got)
		}
	}
	if n := reads.Load(); n != 1 {
		t.Fatalf("20 viewers made %d readings, want 1", n)
	}
	if got, _ := v.get(context.Background(), "lag", read); got != uint64(7) || reads.Load() != 1 {
		t.Fatalf("a later viewer within the TTL read again (%d readings)", reads.Load())
	}
}

// The cached waiting counts follow the stream once the TTL has run out.
func TestStatusViewWaitingFollowsTheStream(t *testing.T) {
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
	v := &streamView{js: js, tables: []string{"currency", "customer"}, ttl: 100 * time.Millisecond}
	if got, err := v.waiting(ctx, nil); err != nil || got["currency"] != 0 {
		t.Fatalf("waiting = %v, %v", got, err)
	}
	for range 3 {
		if _, err := js.Publish(ctx, "dvsync.changes.currency", []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := v.waiting(ctx, nil)
		if err == nil && got["currency"] == 3 && got["customer"] == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting = %v, %v; want currency 3 once the cache ran out", got, err)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition with a deadline
	}
	if lag, err := v.lag(ctx); err != nil || lag != 3 {
		t.Fatalf("lag = %d, %v", lag, err)
	}
}

// A coupling run whose beat finds it interrupted by another start (its heartbeat was stale after
// a long database outage) stops instead of running beside the new run.
func TestACouplingRunStopsWhenAnotherStartInterruptedIt(t *testing.T) {
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "dvsync.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	rec, err := store.StartCouplingRun(ctx, "customer", "ada")
	if err != nil {
		t.Fatal(err)
	}
	r := recordedRuns{store: store, beat: 10 * time.Millisecond}
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := r.watched(ctx, rec, func(ctx context.Context, _ func(replay.CouplingRun, bool)) (replay.CouplingRun, error) {
			close(started)
			select {
			case <-ctx.Done():
				return replay.CouplingRun{}, ctx.Err()
			case <-time.After(30 * time.Second): // the run would go on; the test's deadline
				return replay.CouplingRun{}, errors.New("the run was not stopped")
			}
		})
		done <- err
	}()
	<-started
	// Another start found the run stale and interrupted it.
	if err := store.FinishCouplingRun(ctx, rec.ID, storage.RunCounts{}, storage.RunInterrupted); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, storage.ErrRunLost) {
		t.Fatalf("the lost run ended with %v, want ErrRunLost", err)
	}
	runs, err := store.CouplingRuns(ctx, "customer", 1)
	if err != nil || len(runs) != 1 || runs[0].State != storage.RunInterrupted {
		t.Fatalf("the lost run's end overwrote the interruption: %+v, %v", runs, err)
	}
}
