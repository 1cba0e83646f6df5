package syncworker

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Pauses is a worker's view of which tables are paused, read from the store every few seconds
// and at once when Refresh is called (on a NATS notice that the state changed). A change of a
// paused table is nak'd with a delay, so it waits in the stream; nothing is acked for a pause,
// so a view that is a few seconds old at worst handles a change of a table just paused, or
// holds one of a table just resumed for one more delay.
type Pauses struct {
	// Load reads the paused tables, with when each running table was last resumed.
	Load  func(ctx context.Context) (paused map[string]bool, resumed map[string]time.Time, err error)
	Every time.Duration
	Log   *slog.Logger

	mu      sync.RWMutex
	paused  map[string]bool
	resumed map[string]time.Time
	nudge   chan struct{}
	once    sync.Once
}

func (p *Pauses) init() { p.once.Do(func() { p.nudge = make(chan struct{}, 1) }) }

// Paused reports whether the table's changes wait; a nil Pauses pauses nothing.
func (p *Pauses) Paused(table string) bool {
	if p == nil {
		return false
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.paused[table]
}

// ResumedAt is when a running table was last resumed (zero when never).
func (p *Pauses) ResumedAt(table string) time.Time {
	if p == nil {
		return time.Time{}
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.resumed[table]
}

// Refresh asks for a read now.
func (p *Pauses) Refresh() {
	p.init()
	select {
	case p.nudge <- struct{}{}:
	default:
	}
}

// loadFirst reads until a read succeeds or ctx ends: a worker that starts knows no view to keep,
// and must not handle a paused table's changes because the store was briefly away.
func (p *Pauses) loadFirst(ctx context.Context) error {
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		if p.load(ctx) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// load reads once and reports whether it could; a failed read keeps the last view.
func (p *Pauses) load(ctx context.Context) bool {
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	paused, resumed, err := p.Load(lctx)
	if err != nil {
		// The last view stays: a store that is away for a while must not resume (or pause) anything.
		if ctx.Err() == nil {
			p.Log.Warn("reading the paused tables; keeping the last view", "err", err)
		}
		return false
	}
	p.mu.Lock()
	p.paused, p.resumed = paused, resumed
	p.mu.Unlock()
	return true
}

// Run refreshes the view until ctx ends.
func (p *Pauses) Run(ctx context.Context) {
	p.init()
	t := time.NewTicker(p.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.nudge:
		}
		p.load(ctx)
	}
}
