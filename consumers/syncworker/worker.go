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
	"hash/fnv"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

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
	// the same lane, so they are applied in stream order within the process.
	Lanes int
	// HandleTimeout bounds how long one message is held, in-process retries included. It must
	// stay well under the consumer's AckWait.
	HandleTimeout time.Duration
	// AckWait is the consumer's; the worker sends InProgress at a third of it while it works.
	AckWait time.Duration
	// MaxDeliver is the consumer's: on the last delivery a failure is published, not nak'd.
	MaxDeliver int
	// RedeliveryDelay is the nak delay after the given delivery, before Retry-After is applied.
	RedeliveryDelay func(delivered uint64) time.Duration
	// RetryBudget is how long a change that keeps failing transiently is retried, counted from
	// when it was stored; then it is parked as a dataverse_unavailable setup error.
	RetryBudget time.Duration
}

// DefaultConfig fits natsjs.DefaultTopology.
func DefaultConfig() Config {
	return Config{Lanes: 8, HandleTimeout: 45 * time.Second, AckWait: 2 * time.Minute, MaxDeliver: 200,
		RedeliveryDelay: ExponentialDelay(5*time.Second, 10*time.Minute), RetryBudget: 24 * time.Hour}
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
// consumer: ordering per record across processes is kept by the coupling store's per-record lock
// and the version rule.
type Worker struct {
	Consumer jetstream.Consumer
	Syncer   *domain.Syncer
	Outcomes Outcomes
	Config   Config
	Metrics  *telemetry.Metrics
	Log      *slog.Logger
}

// job is a fetched message with its decoded event, or the reason it could not be decoded.
type job struct {
	msg     jetstream.Msg
	meta    *jetstream.MsgMetadata
	event   domain.ChangeEvent
	invalid *domain.Failure
}

// Run consumes until ctx is cancelled. Then it stops fetching, lets each lane finish the message
// it is handling, naks the messages not started (so another worker takes them at once) and
// returns.
func (w *Worker) Run(ctx context.Context) error {
	iter, err := w.Consumer.Messages(jetstream.PullMaxMessages(w.Config.Lanes))
	if err != nil {
		return err
	}
	stopped := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			iter.Drain()
		case <-stopped:
		}
	}()
	defer close(stopped)

	lanes := make([]chan job, w.Config.Lanes)
	var wg sync.WaitGroup
	for i := range lanes {
		lanes[i] = make(chan job, 1)
		wg.Add(1)
		go func(in <-chan job) {
			defer wg.Done()
			for j := range in {
				if ctx.Err() != nil {
					w.nak(j, 0)
					continue
				}
				w.handle(j)
			}
		}(lanes[i])
	}
	defer func() {
		for _, l := range lanes {
			close(l)
		}
		wg.Wait()
	}()

	for {
		msg, err := iter.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return nil
		}
		if err != nil {
			w.Log.Warn("fetching change events", "err", err)
			continue
		}
		if ctx.Err() != nil {
			_ = msg.Nak()
			continue
		}
		j := w.decode(msg)
		select {
		case lanes[w.lane(j)] <- j:
		case <-ctx.Done():
			_ = msg.Nak()
		}
	}
}

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
