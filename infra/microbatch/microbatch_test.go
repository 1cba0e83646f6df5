package microbatch

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is a Flush that doubles each item and remembers the batch sizes it saw.
type recorder struct {
	mu      sync.Mutex
	sizes   []int
	release chan struct{} // when set, each flush waits for it
	started chan int      // when set, each flush first says how many items it has
}

func (r *recorder) flush(_ context.Context, items []int) ([]int, []error) {
	if r.started != nil {
		r.started <- len(items)
	}
	if r.release != nil {
		<-r.release
	}
	r.mu.Lock()
	r.sizes = append(r.sizes, len(items))
	r.mu.Unlock()
	outs, errs := make([]int, len(items)), make([]error, len(items))
	for i, v := range items {
		outs[i] = 2 * v
		if v < 0 {
			errs[i] = errors.New("negative")
		}
	}
	return outs, errs
}

func (r *recorder) batches() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.sizes...)
}

func TestEachCallerGetsItsOwnResult(t *testing.T) {
	rec := &recorder{}
	b := New(Config{MaxSize: 10, Linger: 50 * time.Millisecond, MaxInFlight: 2}, rec.flush)
	defer b.Close()
	var wg sync.WaitGroup
	for i := -5; i < 45; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := b.Do(context.Background(), i)
			if (err != nil) != (i < 0) || (err == nil && out != 2*i) {
				t.Errorf("item %d: got %d, %v", i, out, err)
			}
		}()
	}
	wg.Wait()
	total := 0
	for _, n := range rec.batches() {
		if n > 10 {
			t.Errorf("a batch of %d items exceeds MaxSize 10", n)
		}
		total += n
	}
	if total != 50 {
		t.Errorf("flushed %d items, want 50", total)
	}
}

func TestAFullBatchDoesNotWaitForTheLinger(t *testing.T) {
	rec := &recorder{}
	b := New(Config{MaxSize: 4, Linger: time.Hour, MaxInFlight: 1}, rec.flush)
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := b.Do(ctx, i); err != nil {
				t.Errorf("item %d: %v", i, err)
			}
		}()
	}
	wg.Wait() // an hour's linger would end the test by its timeout
	if got := rec.batches(); len(got) != 1 || got[0] != 4 {
		t.Errorf("batches %v, want one of 4", got)
	}
}

func TestItemsGatherWhileEveryFlushIsBusy(t *testing.T) {
	rec := &recorder{release: make(chan struct{}), started: make(chan int, 2)}
	b := New(Config{MaxSize: 100, Linger: time.Millisecond, MaxInFlight: 1}, rec.flush)
	defer b.Close()
	var wg sync.WaitGroup
	do := func(i int) {
		defer wg.Done()
		if _, err := b.Do(context.Background(), i); err != nil {
			t.Errorf("item %d: %v", i, err)
		}
	}
	wg.Add(1)
	go do(0)
	if n := <-rec.started; n != 1 { // the first flush holds the only slot
		t.Fatalf("first flush has %d items, want 1", n)
	}
	for i := 1; i <= 20; i++ {
		wg.Add(1)
		go do(i)
	}
	waitFor(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return len(b.pending) == 20 })
	close(rec.release)
	wg.Wait()
	if got := rec.batches(); len(got) != 2 || got[0] != 1 || got[1] != 20 {
		t.Errorf("batches %v, want [1 20]: the 20 items that came while the slot was busy go together", got)
	}
}

func TestTheInFlightCapFollowsInFlightLimit(t *testing.T) {
	rec := &recorder{release: make(chan struct{}), started: make(chan int, 10)}
	var limit atomic.Int64
	limit.Store(1)
	b := New(Config{MaxSize: 1, Linger: 0, InFlightLimit: func() int { return int(limit.Load()) }}, rec.flush)
	defer b.Close()
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := b.Do(context.Background(), i); err != nil {
				t.Errorf("item %d: %v", i, err)
			}
		}()
	}
	<-rec.started
	waitFor(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return len(b.pending) == 2 })
	if n := b.InFlight(); n != 1 {
		t.Fatalf("%d flushes in flight under a cap of 1", n)
	}
	limit.Store(3)
	b.Recheck() // the cap rose without a flush ending
	<-rec.started
	<-rec.started
	if n := b.InFlight(); n != 3 {
		t.Fatalf("%d flushes in flight under a cap of 3", n)
	}
	close(rec.release)
	wg.Wait()
}

func TestACallerThatStopsWaitingIsLeftOut(t *testing.T) {
	rec := &recorder{}
	b := New(Config{MaxSize: 10, Linger: time.Hour, MaxInFlight: 1}, rec.flush)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := b.Do(ctx, 1); done <- err }()
	waitFor(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return len(b.pending) == 1 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Do returned %v, want context.Canceled", err)
	}
	b.Close() // sends what is pending: the cancelled item is dropped, not flushed
	if got := rec.batches(); len(got) != 0 {
		t.Errorf("batches %v, want none", got)
	}
	if _, err := b.Do(context.Background(), 2); !errors.Is(err, ErrClosed) {
		t.Errorf("Do after Close: %v, want ErrClosed", err)
	}
}

func TestAFlushIsCancelledOnceEveryCallerStoppedWaiting(t *testing.T) {
	flushEnded := make(chan error, 1)
	b := New(Config{MaxSize: 2, Linger: time.Hour, MaxInFlight: 1}, func(ctx context.Context, items []int) ([]int, []error) {
		<-ctx.Done() // a sink that hangs
		flushEnded <- ctx.Err()
		return items, make([]error, len(items))
	})
	defer b.Close()
	ctx1, cancel1 := context.WithCancel(context.Background())
	ctx2, cancel2 := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { _, err := b.Do(ctx1, 1); done <- err }()
	go func() { _, err := b.Do(ctx2, 2); done <- err }()
	waitFor(t, func() bool { return b.InFlight() == 1 })
	cancel1()
	<-done
	select {
	case err := <-flushEnded:
		t.Fatalf("the flush ended (%v) while a caller still waited", err)
	default:
	}
	cancel2()
	<-done
	if err := <-flushEnded; !errors.Is(err, context.Canceled) {
		t.Errorf("flush ctx ended with %v, want context.Canceled", err)
	}
}

func TestCloseSendsWhatIsPending(t *testing.T) {
	rec := &recorder{}
	b := New(Config{MaxSize: 10, Linger: time.Hour, MaxInFlight: 1}, rec.flush)
	done := make(chan int, 1)
	go func() { out, _ := b.Do(context.Background(), 21); done <- out }()
	waitFor(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return len(b.pending) == 1 })
	b.Close()
	if out := <-done; out != 42 {
		t.Errorf("got %d, want 42", out)
	}
}

func TestAPanickingFlushFailsItsItemsOnly(t *testing.T) {
	b := New(Config{MaxSize: 1, Linger: 0, MaxInFlight: 1}, func(_ context.Context, items []int) ([]int, []error) {
		if items[0] == 13 {
			panic("unlucky")
		}
		return items, make([]error, len(items))
	})
	defer b.Close()
	if _, err := b.Do(context.Background(), 13); err == nil {
		t.Error("the panicking flush reported no error")
	}
	if out, err := b.Do(context.Background(), 7); err != nil || out != 7 {
		t.Errorf("next flush: %d, %v", out, err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10 s")
		}
		time.Sleep(time.Millisecond)
	}
}
