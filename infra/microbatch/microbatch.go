// Package microbatch merges calls that many goroutines make at the same time into one call per
// batch: each caller submits one item and waits for its own result, while a batch goes out when it
// is full or when its first item has waited Linger. dvsync's sync lanes each handle one record;
// the coupling store and the Dataverse client use this to turn the lanes' concurrent reads and
// writes into one database statement or one Dataverse request per batch.
package microbatch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// ErrClosed is the answer to an item submitted after Close.
var ErrClosed = errors.New("microbatch: closed")

// Flush sends one batch and returns one result and one error per item, in order. ctx ends at the
// latest deadline among the batch's callers, so that no caller's wait is cut short by another's,
// or as soon as every caller has stopped waiting (a shutdown, say), as a call of its own would.
type Flush[In, Out any] func(ctx context.Context, items []In) ([]Out, []error)

// Config shapes the batches.
type Config struct {
	// MaxSize is the most items one flush carries (at least 1).
	MaxSize int
	// Linger is how long the first item of a batch waits for more before the batch goes out.
	Linger time.Duration
	// MaxInFlight is how many flushes run at once (at least 1). While all are busy, items gather
	// into the next batch, so a slow sink gets fuller batches rather than more of them.
	MaxInFlight int
	// InFlightLimit, when set, replaces MaxInFlight with a cap that follows the sink: it is asked
	// before each flush (a result below 1 counts as 1), and again after every flush ends or when
	// Recheck says the cap may have risen.
	InFlightLimit func() int
}

// Batcher collects items into batches for one Flush. Its zero value is not usable: use New.
type Batcher[In, Out any] struct {
	flush    Flush[In, Out]
	linger   time.Duration
	maxSize  atomic.Int64
	limit    func() int
	inFlight atomic.Int64
	freed    chan struct{} // a flush ended, or Recheck: the loop looks at the cap again

	mu      sync.Mutex
	pending []*call[In, Out]
	firstAt time.Time
	closed  bool

	wake chan struct{}
	quit chan struct{}
	wg   sync.WaitGroup
}

type call[In, Out any] struct {
	ctx  context.Context
	in   In
	done chan result[Out]
}

type result[Out any] struct {
	out Out
	err error
}

// New starts a batcher; Close stops it.
func New[In, Out any](cfg Config, flush Flush[In, Out]) *Batcher[In, Out] {
	b := &Batcher[In, Out]{flush: flush, linger: cfg.Linger, limit: cfg.InFlightLimit,
		freed: make(chan struct{}, 1), wake: make(chan struct{}, 1), quit: make(chan struct{})}
	if b.limit == nil {
		static := max(cfg.MaxInFlight, 1)
		b.limit = func() int { return static }
	}
	b.SetMaxSize(cfg.MaxSize)
	b.wg.Add(1)
	go b.run()
	return b
}

// SetMaxSize changes the batch size from the next batch on (at least 1).
func (b *Batcher[In, Out]) SetMaxSize(n int) { b.maxSize.Store(int64(max(n, 1))) }

// MaxSize is the batch size in force.
func (b *Batcher[In, Out]) MaxSize() int { return int(b.maxSize.Load()) }

// Recheck makes the batcher ask InFlightLimit again: for a cap that rose without a flush ending
// (a throttled sink that is open again, say).
func (b *Batcher[In, Out]) Recheck() { signal(b.freed) }

// InFlight is how many flushes are running.
func (b *Batcher[In, Out]) InFlight() int { return int(b.inFlight.Load()) }

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Do submits one item and waits for its result or for ctx to end. When ctx ends first the item
// may still be sent with its batch: callers must be able to live with that (dvsync's writes are
// conditional for this reason).
func (b *Batcher[In, Out]) Do(ctx context.Context, in In) (Out, error) {
	var zero Out
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	c := &call[In, Out]{ctx: ctx, in: in, done: make(chan result[Out], 1)}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return zero, ErrClosed
	}
	if len(b.pending) == 0 {
		b.firstAt = time.Now()
	}
	b.pending = append(b.pending, c)
	b.mu.Unlock()
	signal(b.wake)
	select {
	case r := <-c.done:
		return r.out, r.err
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// Close sends what is pending at once, waits for every flush to finish and refuses new items.
func (b *Batcher[In, Out]) Close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	b.mu.Unlock()
	close(b.quit)
	b.wg.Wait()
}

func (b *Batcher[In, Out]) run() {
	defer b.wg.Done()
	var flushes sync.WaitGroup
	defer flushes.Wait()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		b.mu.Lock()
		n, first, closed := len(b.pending), b.firstAt, b.closed
		b.mu.Unlock()
		if n == 0 {
			if closed {
				return
			}
			select {
			case <-b.wake:
			case <-b.quit:
			}
			continue
		}
		if wait := b.linger - time.Since(first); n < b.MaxSize() && !closed && wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-b.wake:
			case <-b.quit:
			}
			timer.Stop()
			continue
		}
		if int(b.inFlight.Load()) >= max(b.limit(), 1) {
			// Items keep gathering while every flush is busy. Not b.quit: once closed, it is
			// always ready, and Close still sends what is pending.
			<-b.freed
			continue
		}
		b.inFlight.Add(1)
		b.mu.Lock()
		take := min(len(b.pending), b.MaxSize())
		batch := b.pending[:take:take]
		b.pending = append([]*call[In, Out](nil), b.pending[take:]...)
		b.mu.Unlock()
		flushes.Add(1)
		go func() {
			defer flushes.Done()
			b.send(batch)
			b.inFlight.Add(-1)
			signal(b.freed)
		}()
	}
}

// send flushes one batch and hands each caller its result; callers that stopped waiting are left out.
func (b *Batcher[In, Out]) send(batch []*call[In, Out]) {
	live := batch[:0:0]
	var deadline time.Time
	bounded := true
	for _, c := range batch {
		if c.ctx.Err() != nil {
			continue
		}
		live = append(live, c)
		if d, ok := c.ctx.Deadline(); !ok {
			bounded = false
		} else if d.After(deadline) {
			deadline = d
		}
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	if bounded {
		ctx, cancel = context.WithDeadline(context.Background(), deadline)
	}
	defer cancel()
	waiting := atomic.Int64{}
	waiting.Store(int64(len(live)))
	for _, c := range live {
		stop := context.AfterFunc(c.ctx, func() {
			if waiting.Add(-1) == 0 {
				cancel()
			}
		})
		defer stop()
	}
	items := make([]In, len(live))
	for i, c := range live {
		items[i] = c.in
	}
	outs, errs := b.safeFlush(ctx, items)
	for i, c := range live {
		c.done <- result[Out]{out: outs[i], err: errs[i]}
	}
}

// safeFlush calls flush and turns a panic or a wrong number of results into an error for each item.
func (b *Batcher[In, Out]) safeFlush(ctx context.Context, items []In) (outs []Out, errs []error) {
	defer func() {
		p := recover()
		if p == nil && len(outs) == len(items) && len(errs) == len(items) {
			return
		}
		err := fmt.Errorf("microbatch: flush of %d items gave %d results and %d errors", len(items), len(outs), len(errs))
		if p != nil {
			err = fmt.Errorf("microbatch: flush panicked: %v", p)
		}
		outs, errs = make([]Out, len(items)), make([]error, len(items))
		for i := range errs {
			errs[i] = err
		}
	}()
	return b.flush(ctx, items)
}
