package dataverse

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// gate holds back every request of one Dataverse user after a 429: Retry-After is a wait for the
// user, not for the one request that got it, and callers that kept sending would lengthen it.
type gate struct {
	mu    sync.Mutex
	until time.Time
}

func (g *gate) block(d time.Duration) time.Time {
	return g.holdUntil(time.Now().Add(d))
}

// holdUntil closes the gate until t (or later, if it already is) and returns when it opens.
func (g *gate) holdUntil(t time.Time) time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	if t.After(g.until) {
		g.until = t
	}
	return g.until
}

// wait returns when the gate is open. When the wait would outlast ctx's deadline it returns at
// once with a throttling error carrying the wait, so that the caller can reschedule the work.
func (g *gate) wait(ctx context.Context) error {
	g.mu.Lock()
	d := time.Until(g.until)
	g.mu.Unlock()
	if d <= 0 {
		return nil
	}
	if deadline, ok := ctx.Deadline(); ok && time.Now().Add(d).After(deadline) {
		return heldTooLong(d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// heldTooLong is the throttling error of a request not sent because the user's gate opens only
// after the request's deadline.
func heldTooLong(d time.Duration) *Error {
	return &Error{Status: http.StatusTooManyRequests, RetryAfter: d,
		Message: "Dataverse asked this user to wait (Retry-After) for longer than the request may take; not sent"}
}

// limiter caps the requests in flight; Dataverse's x-ms-dop-hint lowers the cap.
type limiter struct {
	mu      sync.Mutex
	max     int // the configured cap
	limit   int // the cap now: min(max, the last dop hint)
	inUse   int
	changed chan struct{} // closed and replaced whenever a slot frees or the cap changes
}

func newLimiter(max int) *limiter {
	return &limiter{max: max, limit: max, changed: make(chan struct{})}
}

func (l *limiter) acquire(ctx context.Context) error {
	for {
		l.mu.Lock()
		if l.inUse < l.limit {
			l.inUse++
			l.mu.Unlock()
			return nil
		}
		ch := l.changed
		l.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (l *limiter) release() {
	l.mu.Lock()
	l.inUse--
	l.broadcastLocked()
	l.mu.Unlock()
}

// hint applies an x-ms-dop-hint header value.
func (l *limiter) hint(v string) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return
	}
	l.mu.Lock()
	if next := min(n, l.max); next != l.limit {
		l.limit = next
		l.broadcastLocked()
	}
	l.mu.Unlock()
}

// InUse is how many requests are in flight.
func (l *limiter) InUse() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inUse
}

// Limit is the cap on requests in flight now.
func (l *limiter) Limit() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.limit
}

func (l *limiter) broadcastLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}
