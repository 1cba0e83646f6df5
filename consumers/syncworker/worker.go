// Package syncworker consumes change events from JetStream and turns each sync outcome into an
// ack, a nak with a delay, or a published error event.
//
// It uses nats.go's jetstream package directly rather than watermill: the worker needs a
// handler-chosen delay per nak (Dataverse's Retry-After), InProgress while a slow call runs and
// a bounded pull buffer, none of which watermill's NATS adapter offers (shared/reference/peers.md).
package syncworker

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/semaphore"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/events"
	"github.com/dvsync/dvsync/infra/telemetry"
)

// RetryHeader on a change event marks a person's retry: a skipped record is sent again.
const RetryHeader = "Dvsync-Retry"

// Outcomes publishes what a worker decided; natsjs.Publisher implements it.
type Outcomes interface {
	PublishError(ctx context.Context, ev domain.ErrorEvent) error
	PublishSynced(ctx context.Context, msgID string, s domain.RecordSynced) error
}

// Config tunes a worker.
type Config struct {
	// Lanes is how many records one process syncs at once. Events of one record always go to
	// the same lane, so they are applied in stream order within the process. A lane mostly waits
	// (for its batch's database statement or Dataverse request), so there are many: enough to
	// fill every batch that can be in flight (DVSYNC_BATCH_SIZE × in-flight requests × users).
	Lanes int
	// HandleTimeout bounds how long one change is handled, in-process retries included. The
	// worker keeps the message alive with InProgress meanwhile, so it may exceed AckWait.
	HandleTimeout time.Duration
	// AckWait is the consumer's; the worker sends InProgress at a third of it for every message
	// it holds, from the moment it is fetched, so that only a dead worker's messages wait it out.
	AckWait time.Duration
	// QueueDepth × Lanes is how many fetched messages a worker holds, queued or in hand (they are
	// kept alive with InProgress too); fetching waits while it holds that many, so that one
	// worker does not take more of the stream than it can handle soon.
	QueueDepth int
	// ShutdownGrace is how long a stopping worker lets the changes it is handling finish; then
	// their calls are cancelled and they are nak'd for another worker.
	ShutdownGrace time.Duration
	// MaxDeliver is the delivery from which a change that keeps failing is parked as an error
	// instead of nak'd. The consumer has no limit of its own, so a nak on it (a failed publish,
	// a shutdown) still gets the change delivered again.
	MaxDeliver int
	// RedeliveryDelay is the nak delay after the given delivery, before Retry-After is applied.
	RedeliveryDelay func(delivered uint64) time.Duration
	// RetryBudget is how long a change that keeps failing transiently is retried, counted from
	// when it was stored; then it is parked as a dataverse_unavailable setup error.
	RetryBudget time.Duration
	// PausedDelay is the nak delay of a paused table's change: how long after a resume its
	// changes start again at most, and how often each of them comes back while paused.
	PausedDelay time.Duration
	// ProgressEvery is how often the tables' backlog is counted for its progress; a backlog of
	// BacklogThreshold changes or more is shown as a catch-up (h-progress).
	ProgressEvery    time.Duration
	BacklogThreshold uint64
}

// DefaultConfig fits natsjs.DefaultTopology.
func DefaultConfig() Config {
	return Config{Lanes: 1024, HandleTimeout: 45 * time.Second, AckWait: 30 * time.Second, MaxDeliver: 200, QueueDepth: 2,
		ShutdownGrace: 15 * time.Second, RedeliveryDelay: ExponentialDelay(5*time.Second, 10*time.Minute), RetryBudget: 24 * time.Hour,
		PausedDelay: 15 * time.Second, ProgressEvery: 2 * time.Second, BacklogThreshold: 100}
}

// ExponentialDelay doubles from first up to max.
func ExponentialDelay(first, max time.Duration) func(uint64) time.Duration {
	return func(delivered uint64) time.Duration {
		d := first
		for i := uint64(1); i < delivered && d < max; i++ {
			d *= 2
		}
		return min(d, max)
	}
}

// Worker is one sync worker process's consumer loop. Any number of workers may share the durable
// consumer: ordering per record across processes is kept by the coupling store's per-record
// claim and the version rule.
type Worker struct {
	Consumer jetstream.Consumer
	Syncer   *domain.Syncer
	Outcomes Outcomes
	Config   Config
	Metrics  *telemetry.Metrics
	Log      *slog.Logger
	// Pauses, when set, holds the changes of paused tables in the stream (h-pause).
	Pauses *Pauses
	// Progress, when set, keeps the tables' backlog periods (h-progress).
	Progress *Progress
}

// job is a fetched message with its decoded event, or the reason it could not be decoded.
type job struct {
	msg     jetstream.Msg
	meta    *jetstream.MsgMetadata
	event   domain.ChangeEvent
	invalid *domain.Failure
}

// fetchWait is how long one pull waits for messages when the stream is idle.
const fetchWait = 5 * time.Second

// Run consumes until ctx is cancelled. Then it stops fetching, lets each lane finish the message
// it is handling (at most ShutdownGrace, then its calls are cancelled), naks the messages not
// started (so another worker takes them at once) and returns.
//
// It pulls with Fetch, never more than its lanes have room for, rather than with a prefetching
// iterator: every message the worker has been given is held (kept alive with InProgress) from
// the moment it arrives, so a message can outlive the ack wait only in a worker that died.
func (w *Worker) Run(ctx context.Context) error {
	// work is the context of the changes being handled: it outlives ctx by the shutdown grace.
	work, stopWork := context.WithCancel(context.Background())
	defer stopWork()
	stopped := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-stopped:
			return
		}
		select {
		case <-time.After(w.Config.ShutdownGrace):
			stopWork()
		case <-stopped:
		}
	}()
	defer close(stopped)
	held := newHeartbeat(w.Config.AckWait/3, w.Log)
	defer held.stop()
	if w.Pauses != nil {
		// The stored state first: a worker that starts must not handle a paused table's changes.
		if err := w.Pauses.loadFirst(ctx); err != nil {
			return err
		}
		var pw sync.WaitGroup
		pctx, stopPauses := context.WithCancel(ctx)
		pw.Go(func() { w.Pauses.Run(pctx) })
		defer pw.Wait()
		defer stopPauses()
	}
	if w.Progress != nil {
		var pw sync.WaitGroup
		// It counts on while the lanes finish (the defers below stop it after them), so that their
		// last acks are reported and nothing is left in hand.
		pctx, stopProgress := context.WithCancel(context.WithoutCancel(ctx))
		pw.Go(func() { w.Progress.Run(pctx) })
		defer pw.Wait()
		defer stopProgress()
	}

	depth := max(w.Config.QueueDepth, 1)
	capacity := w.Config.Lanes * depth
	slots := semaphore.NewWeighted(int64(capacity))
	lanes := make([]*laneQueue, w.Config.Lanes)
	var wg sync.WaitGroup
	for i := range lanes {
		lanes[i] = newLaneQueue()
		wg.Add(1)
		go func(in *laneQueue) {
			defer wg.Done()
			for {
				j, ok := in.pop()
				if !ok {
					return
				}
				if ctx.Err() != nil {
					w.nak(j, 0)
				} else {
					w.handleSafely(work, j)
				}
				held.release(j.msg)
				w.Progress.released(j.msg.Subject())
				slots.Release(1)
			}
		}(lanes[i])
	}
	defer func() {
		for _, l := range lanes {
			l.close()
		}
		wg.Wait()
	}()

	for {
		// Wait for room, then take all the room there is.
		if err := slots.Acquire(ctx, 1); err != nil {
			return nil // stopping
		}
		room := 1
		for room < capacity && slots.TryAcquire(1) {
			room++
		}
		dispatched := w.fetch(ctx, room, held, lanes)
		slots.Release(int64(room - dispatched))
	}
}

// fetch pulls up to n messages and hands each to its record's lane; it returns how many it
// handed over (each lane releases its slot when done).
func (w *Worker) fetch(ctx context.Context, n int, held *heartbeat, lanes []*laneQueue) int {
	fctx, cancel := context.WithTimeout(ctx, fetchWait)
	defer cancel()
	batch, err := w.Consumer.Fetch(n, jetstream.FetchContext(fctx))
	if err != nil {
		if ctx.Err() == nil {
			w.Log.Warn("fetching change events", "err", err)
			select { // NATS is away: do not spin
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
		return 0
	}
	dispatched := 0
	for msg := range batch.Messages() {
		held.hold(msg)
		if ctx.Err() != nil {
			_ = msg.Nak()
			held.release(msg)
			continue
		}
		w.Progress.held(msg.Subject())
		j := w.decode(msg)
		lanes[w.lane(j)].push(j)
		dispatched++
	}
	if err := batch.Error(); err != nil && ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
		w.Log.Warn("fetching change events", "err", err)
	}
	return dispatched
}

// laneQueue is one lane's queue of fetched messages. It never blocks the dispatcher: a lane that
// gets several messages at once (its records' hashes collided) must not stop the others from
// being fed. What all lanes hold together is bounded by the worker's slots.
type laneQueue struct {
	mu     sync.Mutex
	jobs   []job
	closed bool
	ready  chan struct{}
}

func newLaneQueue() *laneQueue { return &laneQueue{ready: make(chan struct{}, 1)} }

func (q *laneQueue) push(j job) {
	q.mu.Lock()
	q.jobs = append(q.jobs, j)
	q.mu.Unlock()
	q.signal()
}

func (q *laneQueue) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// pop waits for the next message; it reports false once the queue is closed and empty.
func (q *laneQueue) pop() (job, bool) {
	for {
		q.mu.Lock()
		if len(q.jobs) > 0 {
			j := q.jobs[0]
			q.jobs[0] = job{}
			q.jobs = q.jobs[1:]
			q.mu.Unlock()
			return j, true
		}
		closed := q.closed
		q.mu.Unlock()
		if closed {
			return job{}, false
		}
		<-q.ready
	}
}

func (q *laneQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.signal()
}

// handleSafely handles a job and turns a panic (a bug) into a reported error, so that one change
// cannot kill the worker, nor kill it again on every redelivery.
func (w *Worker) handleSafely(work context.Context, j job) {
	defer func() {
		if p := recover(); p != nil {
			stack := string(debug.Stack())
			w.Log.Error("panic while handling a change; reported as an error", "seq", j.meta.Sequence.Stream,
				"table", j.event.Table, "key", j.event.Key, "panic", fmt.Sprint(p), "stack", stack)
			defer func() {
				if recover() != nil { // reporting panicked too: leave it to a redelivery
					w.nak(j, w.Config.RedeliveryDelay(j.meta.NumDelivered))
				}
			}()
			ctx, cancel := context.WithTimeout(work, w.Config.HandleTimeout)
			defer cancel()
			w.report(ctx, w.Log, j, domain.Crashed(p), []domain.Stage{w.stage("panic", domain.Truncate(stack, maxStackText))}, "failed")
		}
	}()
	w.handle(work, j)
}

// maxStackText bounds the Go stack kept with an error for a panic.
const maxStackText = 8 << 10

// heartbeat sends InProgress for every message a worker holds, queued or being handled, so that
// AckWait only runs out for a worker that died.
type heartbeat struct {
	mu   sync.Mutex
	msgs map[jetstream.Msg]struct{}
	done chan struct{}
	wg   sync.WaitGroup
}

func newHeartbeat(every time.Duration, log *slog.Logger) *heartbeat {
	h := &heartbeat{msgs: map[jetstream.Msg]struct{}{}, done: make(chan struct{})}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-h.done:
				return
			case <-t.C:
				h.mu.Lock()
				msgs := make([]jetstream.Msg, 0, len(h.msgs))
				for m := range h.msgs {
					msgs = append(msgs, m)
				}
				h.mu.Unlock()
				for _, m := range msgs {
					if err := m.InProgress(); err != nil {
						log.Debug("in-progress not sent", "err", err)
					}
				}
			}
		}
	}()
	return h
}

func (h *heartbeat) hold(m jetstream.Msg) { h.mu.Lock(); h.msgs[m] = struct{}{}; h.mu.Unlock() }

func (h *heartbeat) release(m jetstream.Msg) { h.mu.Lock(); delete(h.msgs, m); h.mu.Unlock() }

func (h *heartbeat) stop() { close(h.done); h.wg.Wait() }

func (w *Worker) decode(msg jetstream.Msg) job {
	j := job{msg: msg}
	j.meta, _ = msg.Metadata()
	if j.meta == nil {
		j.meta = &jetstream.MsgMetadata{}
	}
	ev, f := events.Decode(msg.Subject(), msg.Headers(), msg.Data())
	// A person's retry (the replay tool sets this header) sends a skipped record again.
	ev.Retry = msg.Headers().Get(RetryHeader) != ""
	j.event, j.invalid = ev, f
	return j
}

// lane keeps every event of one record on one lane; undecodable events spread by sequence.
func (w *Worker) lane(j job) int {
	h := fnv.New32a()
	if j.invalid != nil {
		return int(j.meta.Sequence.Stream % uint64(w.Config.Lanes))
	}
	h.Write([]byte(j.event.Table))
	h.Write([]byte{0})
	h.Write([]byte(j.event.Key))
	return int(h.Sum32() % uint32(w.Config.Lanes))
}
