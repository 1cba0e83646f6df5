package dataverse

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/microbatch"
)

// Batch sizes and linger of a Batched port.
const (
	DefaultBatchSize    = 100
	DefaultBatchLinger  = 20 * time.Millisecond
	DefaultMinBatchSize = 10
	maxBatchParts       = 1000 // Dataverse's limit per $batch
)

// codeExecutionTime is Dataverse's 429 for a user whose requests spent more than the window's
// execution time (20 minutes in 5).
const codeExecutionTime = "0x80072321"

// User is one application user of the environment: its client (with its own token source,
// throttle gate and limiter) and the name metrics know it by, its app's client id (never a secret).
type User struct {
	Name   string
	Client *Client
}

// BatchConfig shapes a Batched port's requests.
type BatchConfig struct {
	// Size is the most requests one $batch carries (0: DefaultBatchSize; at most 1000). It is
	// halved, down to MinSize, when Dataverse answers with execution-time throttling, and grows
	// back by a twentieth of Size with every batch that is not.
	Size    int
	MinSize int // 0: DefaultMinBatchSize
	// Linger is how long the first call of a batch waits for others (0: it waits for none; the
	// calls that come while every request in flight is busy still gather).
	Linger time.Duration
	// OnBatch sees every request a flush sends: the user, the entity set and how many calls it
	// carries (1 for a call sent alone).
	OnBatch func(user, entitySet string, calls int)
}

// Batched is the domain port over one or more application users of one environment, with the
// calls that the sync lanes make at the same time merged into one $batch per entity set: top-level
// parts, each the request the single call sends (its If-Match or If-None-Match, Prefer and
// $select), with odata.continue-on-error so that each part succeeds or fails on its own, and each
// caller gets what the single call would have given it.
//
// Why $batch and not CreateMultiple, UpdateMultiple or UpsertMultiple: the bulk actions take no
// If-Match or If-None-Match per record, and every write of the port is conditional (see
// domain.Dataverse), so that a write dvsync gave up on, which Dataverse may still carry out later,
// never overwrites a newer one. A $batch counts as one request toward the user's 6,000 per
// window; its parts spend execution time as they would alone.
//
// Each flush goes to a user whose throttle gate is open, least loaded first; the flushes in flight
// follow the users' capacity (x-ms-dop-hint, gates), so that while Dataverse is busy calls gather
// into fuller batches rather than queue in half-empty ones.
type Batched struct {
	users   []*batchUser
	cfg     BatchConfig
	size    atomic.Int64 // the batch size in force
	growBy  int64
	onBatch func(user, entitySet string, calls int)

	mu            sync.Mutex
	batchers      map[string]*microbatch.Batcher[batchCall, *response]
	lookups       map[string]*microbatch.Batcher[lookupCall, []domain.FoundRow] // by lookupShape (lookup.go)
	lookupsClosed bool                                                          // Close has begun: the lookups' own calls still go out through batchers
	next          int                                                           // where the next pick starts, so that users equally loaded take turns
	closed        bool
	recheck       *time.Timer // wakes the batchers when a throttled user's gate opens
	recheckAt     time.Time
}

type batchUser struct {
	User
	assigned int // requests this port has in flight through the user (under Batched.mu)
}

// batchCall is one caller's request and its deadline (zero: none).
type batchCall struct {
	req      rowRequest
	deadline time.Time
}

// NewBatched returns the batched port over users; Close stops it.
func NewBatched(users []User, cfg BatchConfig) (*Batched, error) {
	if len(users) == 0 {
		return nil, errors.New("dataverse: a batched port needs at least one user")
	}
	if cfg.Size == 0 {
		cfg.Size = DefaultBatchSize
	}
	if cfg.Size < 1 || cfg.Size > maxBatchParts {
		return nil, fmt.Errorf("dataverse: batch size %d is not between 1 and %d", cfg.Size, maxBatchParts)
	}
	if cfg.MinSize <= 0 {
		cfg.MinSize = DefaultMinBatchSize
	}
	cfg.MinSize = min(cfg.MinSize, cfg.Size)
	cfg.Linger = max(cfg.Linger, 0)
	b := &Batched{cfg: cfg, growBy: int64(max(1, cfg.Size/20)), onBatch: cfg.OnBatch,
		batchers: map[string]*microbatch.Batcher[batchCall, *response]{},
		lookups:  map[string]*microbatch.Batcher[lookupCall, []domain.FoundRow]{}}
	for _, u := range users {
		if u.Client == nil {
			return nil, fmt.Errorf("dataverse: user %q has no client", u.Name)
		}
		b.users = append(b.users, &batchUser{User: u})
	}
	b.size.Store(int64(cfg.Size))
	return b, nil
}

var _ domain.Dataverse = (*Batched)(nil)

// CreateRow is Client.CreateRow, sent in a $batch with the calls made at the same time.
func (b *Batched) CreateRow(ctx context.Context, row domain.RowRef, attrs domain.Attributes) (string, error) {
	return writtenVersion(b.do(ctx, createRowRequest(row, attrs)))
}

// UpdateRow is Client.UpdateRow, sent in a $batch with the calls made at the same time.
func (b *Batched) UpdateRow(ctx context.Context, row domain.RowRef, attrs domain.Attributes, ifMatch string) (string, error) {
	return writtenVersion(b.do(ctx, updateRowRequest(row, attrs, ifMatch)))
}

// DeleteRow is Client.DeleteRow, sent in a $batch with the calls made at the same time.
func (b *Batched) DeleteRow(ctx context.Context, row domain.RowRef, ifMatch string) error {
	_, err := b.do(ctx, deleteRowRequest(row, ifMatch))
	return err
}

// RowVersion is Client.RowVersion, sent in a $batch with the calls made at the same time.
func (b *Batched) RowVersion(ctx context.Context, row domain.RowRef) (string, bool, error) {
	return foundVersion(b.do(ctx, rowVersionRequest(row)))
}

// FindRowID is Client.FindRowID as a request of its own, through the least loaded user: it is
// rare (a record's first sync with a match rule).
func (b *Batched) FindRowID(ctx context.Context, entitySet, idAttribute, filter string) (uuid.UUID, bool, error) {
	u := b.pick()
	defer b.done(u)
	return u.Client.FindRowID(ctx, entitySet, idAttribute, filter)
}

// Users are the application users the port sends through.
func (b *Batched) Users() []User {
	out := make([]User, len(b.users))
	for i, u := range b.users {
		out[i] = u.User
	}
	return out
}

// BatchSize is the batch size in force.
func (b *Batched) BatchSize() int { return int(b.size.Load()) }

// Close sends the calls that are waiting, waits for every request in flight and refuses new calls.
func (b *Batched) Close() {
	// The lookups first: what they have waiting goes out through the entity sets' batchers.
	b.mu.Lock()
	b.lookupsClosed = true
	lookups := make([]*microbatch.Batcher[lookupCall, []domain.FoundRow], 0, len(b.lookups))
	for _, bt := range b.lookups {
		lookups = append(lookups, bt)
	}
	b.mu.Unlock()
	for _, bt := range lookups {
		bt.Close()
	}
	b.mu.Lock()
	b.closed = true
	if b.recheck != nil {
		b.recheck.Stop()
	}
	batchers := make([]*microbatch.Batcher[batchCall, *response], 0, len(b.batchers))
	for _, bt := range b.batchers {
		batchers = append(batchers, bt)
	}
	b.mu.Unlock()
	for _, bt := range batchers { // not under b.mu: their flushes take it
		bt.Close()
	}
}

func (b *Batched) do(ctx context.Context, req rowRequest) (*response, error) {
	bt, err := b.batcher(req.row.EntitySet)
	if err != nil {
		return nil, err
	}
	deadline, _ := ctx.Deadline()
	return bt.Do(ctx, batchCall{req: req, deadline: deadline})
}

// batcher is the entity set's batcher, started at its first call.
func (b *Batched) batcher(entitySet string) (*microbatch.Batcher[batchCall, *response], error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, microbatch.ErrClosed
	}
	if bt := b.batchers[entitySet]; bt != nil {
		return bt, nil
	}
	var bt *microbatch.Batcher[batchCall, *response]
	bt = microbatch.New(microbatch.Config{MaxSize: b.BatchSize(), Linger: b.cfg.Linger,
		InFlightLimit: func() int { return b.inFlightLimit(bt) }},
		func(ctx context.Context, calls []batchCall) ([]*response, []error) {
			return b.flush(ctx, entitySet, calls)
		})
	b.batchers[entitySet] = bt
	return bt, nil
}

// inFlightLimit is how many requests bt may have in flight: the open users' capacity less what
// the other entity sets' batchers use of it.
func (b *Batched) inFlightLimit(bt *microbatch.Batcher[batchCall, *response]) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	capacity, load := 0, 0
	var reopens time.Time
	for _, u := range b.users {
		load += u.assigned
		if until := u.Client.HeldUntil(); until.After(now) {
			if reopens.IsZero() || until.Before(reopens) {
				reopens = until
			}
			continue
		}
		capacity += u.Client.MaxParallel()
	}
	if !reopens.IsZero() {
		b.recheckAtLocked(reopens)
	}
	// At least one, which microbatch ensures: with every gate closed one batch waits for the
	// first to open (its callers whose deadline comes first get the throttling error at once).
	return capacity - max(load-bt.InFlight(), 0)
}

// recheckAtLocked has the batchers ask for their in-flight limit again at t, when a gate opens.
func (b *Batched) recheckAtLocked(t time.Time) {
	if b.closed || (b.recheck != nil && b.recheckAt.After(time.Now()) && !b.recheckAt.After(t)) {
		return
	}
	if b.recheck != nil {
		b.recheck.Stop()
	}
	b.recheckAt = t
	b.recheck = time.AfterFunc(time.Until(t), func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, bt := range b.batchers {
			bt.Recheck()
		}
	})
}

// pick chooses the user for the next request: one whose gate is open, with the fewest requests
// in flight (equals take turns); when every gate is closed, the one that opens first.
func (b *Batched) pick() *batchUser {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	var best *batchUser
	var bestUntil time.Time
	for k := range b.users {
		u := b.users[(b.next+k)%len(b.users)]
		until := u.Client.HeldUntil()
		if best == nil || preferred(u, until, best, bestUntil, now) {
			best, bestUntil = u, until
		}
	}
	b.next = (b.next + 1) % len(b.users)
	best.assigned++
	return best
}

func preferred(u *batchUser, uUntil time.Time, than *batchUser, thanUntil, now time.Time) bool {
	uOpen, thanOpen := !uUntil.After(now), !thanUntil.After(now)
	switch {
	case uOpen != thanOpen:
		return uOpen
	case !uOpen:
		return uUntil.Before(thanUntil)
	}
	// Fewest in flight, not fewest for its capacity: a user's capacity is known only from its
	// first answer (x-ms-dop-hint), and a new one would look the roomiest until then.
	return u.assigned < than.assigned
}

func (b *Batched) done(u *batchUser) {
	b.mu.Lock()
	u.assigned--
	b.mu.Unlock()
}

// flush sends one batch of an entity set's calls through one user and returns each caller's
// result. A failure of the whole request is every caller's; a failing part is its caller's only.
func (b *Batched) flush(ctx context.Context, entitySet string, calls []batchCall) ([]*response, []error) {
	outs, errs := make([]*response, len(calls)), make([]error, len(calls))
	formedAt := b.size.Load()
	u := b.pick()
	defer b.done(u)
	send := make([]int, 0, len(calls))
	// A caller that must be done before the user's gate opens gets the throttling error now, as
	// its single call would, so that it reschedules the work rather than time out waiting.
	if wait := time.Until(u.Client.HeldUntil()); wait > 0 {
		for i, c := range calls {
			if !c.deadline.IsZero() && time.Now().Add(wait).After(c.deadline) {
				errs[i] = fmt.Errorf("%s %s: %w", c.req.method, c.req.path, heldTooLong(wait))
				continue
			}
			send = append(send, i)
		}
	} else {
		for i := range calls {
			send = append(send, i)
		}
	}
	if len(send) == 0 {
		return outs, errs
	}
	if b.onBatch != nil {
		b.onBatch(u.Name, entitySet, len(send))
	}
	if len(send) == 1 { // alone it is the single call itself
		i := send[0]
		outs[i], errs[i] = u.Client.exec(ctx, calls[i].req)
		var dv *Error
		if errors.As(errs[i], &dv) && dv.Status < 500 && dv.Status != http.StatusTooManyRequests {
			b.adapt(formedAt, nil) // the request went through; Dataverse refused the record
		} else {
			b.adapt(formedAt, errs[i])
		}
		return outs, errs
	}
	reqs := make([]BatchRequest, len(send))
	for k, i := range send {
		r := calls[i].req
		reqs[k] = BatchRequest{Method: r.method, Path: r.path, Body: r.body, Header: r.header}
	}
	results, err := u.Client.Batch(ctx, reqs, BatchOptions{ContinueOnError: true})
	if err != nil {
		for _, i := range send {
			errs[i] = callError(calls[i].req, fmt.Sprintf("%s %s (in a $batch of %d)", calls[i].req.method, calls[i].req.path, len(send)), err)
		}
		b.adapt(formedAt, err)
		return outs, errs
	}
	var throttled *Error
	for k, i := range send {
		r := results[k]
		if r.Err == nil {
			outs[i] = &response{Response: &http.Response{StatusCode: r.Status, Header: r.Header}, body: r.Body}
			continue
		}
		errs[i] = callError(calls[i].req, calls[i].req.method+" "+calls[i].req.path, r.Err)
		var dv *Error
		if errors.As(r.Err, &dv) && dv.Status == http.StatusTooManyRequests && throttled == nil {
			throttled = dv
		}
	}
	if throttled == nil {
		b.adapt(formedAt, nil)
		return outs, errs
	}
	u.Client.throttled(throttled) // a part throttled is the user throttled
	b.adapt(formedAt, throttled)
	return outs, errs
}

// callError is a batch's failure as one caller sees it: a Dataverse error of its own (a copy,
// with its own request for the call stack) wrapped as its single call wraps it.
func callError(req rowRequest, prefix string, err error) error {
	var dv *Error
	if !errors.As(err, &dv) {
		return fmt.Errorf("%s: %w", prefix, err)
	}
	own := *dv
	var payload []byte
	if req.body != nil {
		payload, _ = json.Marshal(req.body) // it was encoded once already for the batch
	}
	own.Request = requestText(req.method, req.path, payload)
	return fmt.Errorf("%s: %w", prefix, &own)
}

// adapt halves the batch size after execution-time throttling and grows it back after a request
// that went through (err nil); other failures leave it. formedAt is the size in force when the
// batch formed: batches throttled together halve it once.
func (b *Batched) adapt(formedAt int64, err error) {
	var dv *Error
	if errors.As(err, &dv) && dv.Status == http.StatusTooManyRequests && domain.NormalizeCode(dv.Code) == codeExecutionTime {
		if next := max(int64(b.cfg.MinSize), formedAt/2); next < formedAt && b.size.CompareAndSwap(formedAt, next) {
			b.applySize(next)
		}
		return
	}
	if err != nil {
		return
	}
	for {
		cur := b.size.Load()
		next := min(int64(b.cfg.Size), cur+b.growBy)
		if next == cur {
			return
		}
		if b.size.CompareAndSwap(cur, next) {
			b.applySize(next)
			return
		}
	}
}

func (b *Batched) applySize(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, bt := range b.batchers {
		bt.SetMaxSize(int(n))
	}
}
