// Package natsjs holds dvsync's JetStream set-up as code (streams and the workers' durable pull
// consumer, created or updated idempotently at start), the publisher of outcome events, and an
// embedded server for `dvsync dev` and tests.
package natsjs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	ChangesStream     = "DVSYNC_CHANGES"
	ErrorsStream      = "DVSYNC_ERRORS"
	WorkerConsumer    = "dvsync-worker"
	ProjectorConsumer = "dvsync-projector"

	ChangesSubjects = "dvsync.changes.>"
	ErrorsSubjects  = "dvsync.errors.>"
)

// Topology is the JetStream configuration dvsync needs.
type Topology struct {
	Replicas        int           // 1 for a single server, 3 in a cluster
	ChangesMaxAge   time.Duration // how long change events stay for replay
	ErrorsMaxAge    time.Duration
	DuplicateWindow time.Duration // publishes with a Nats-Msg-Id seen within it are dropped
	// AckWait is how long a message a worker took waits before another worker gets it, which is
	// how long a killed worker's changes wait. Workers send InProgress at a third of it for every
	// message they have been given (they fetch no more than their lanes take), so it needs no
	// room for slow Dataverse calls.
	AckWait time.Duration
	// MaxDeliver is the delivery on which a worker parks a change that keeps failing as an error
	// (the consumer itself has no limit, see WorkerConsumerConfig): with the workers' growing nak delays, 200 covers the default
	// one-day retry budget; a message that keeps failing ends as an error event, never a hot loop.
	MaxDeliver int
	// MaxAckPending bounds the changes handed out and not yet acked, over every worker: it must
	// cover what the workers hold to fill their batches (lanes × queue depth each).
	MaxAckPending int
}

// DefaultTopology is a single-server set-up with the defaults the README documents.
func DefaultTopology() Topology {
	return Topology{Replicas: 1, ChangesMaxAge: 7 * 24 * time.Hour, ErrorsMaxAge: 30 * 24 * time.Hour,
		DuplicateWindow: 2 * time.Minute, AckWait: 30 * time.Second, MaxDeliver: 200, MaxAckPending: 20000}
}

// Validate checks the settings together.
func (t Topology) Validate() error {
	var errs []error
	if t.Replicas < 1 || t.Replicas > 5 {
		errs = append(errs, fmt.Errorf("replicas %d is not between 1 and 5", t.Replicas))
	}
	if t.AckWait < 10*time.Second {
		errs = append(errs, fmt.Errorf("ack wait %s is shorter than 10s", t.AckWait))
	}
	if t.MaxDeliver < 2 {
		errs = append(errs, fmt.Errorf("max deliver %d must be at least 2", t.MaxDeliver))
	}
	if t.DuplicateWindow <= 0 || t.DuplicateWindow > t.ChangesMaxAge {
		errs = append(errs, fmt.Errorf("duplicate window %s must be positive and within the changes max age", t.DuplicateWindow))
	}
	return errors.Join(errs...)
}

// WorkerConsumerConfig is the workers' durable pull consumer.
//
// It has no BackOff list on purpose: the workers back off themselves, with a growing delay on
// every nak (and Dataverse's Retry-After). nats-server (2.15) stores a nak delay as
// now-AckWait+delay but, with a BackOff list, measures it against BackOff[deliveries-1], so every
// nak after the first would wait BackOff[n]-AckWait longer than asked. A worker that dies
// mid-message is covered by AckWait (30s by default).
func (t Topology) WorkerConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       WorkerConsumer,
		Description:   "dvsync sync workers: change events to Dataverse",
		FilterSubject: ChangesSubjects,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       t.AckWait,
		// Unlimited: the worker parks a change as an error itself on its MaxDeliver-th delivery. A
		// consumer limit would drop the change whenever that last delivery ends in a nak (the error
		// event could not be published, the worker was stopping): it is never redelivered after.
		// Every nak carries a growing delay, so this is no hot loop.
		MaxDeliver:    -1,
		MaxAckPending: t.MaxAckPending,
		Replicas:      t.Replicas,
	}
}

// Ensure creates or updates the streams and the workers' consumer; running it again, from any
// number of processes, changes nothing.
func Ensure(ctx context.Context, js jetstream.JetStream, t Topology) error {
	if err := t.Validate(); err != nil {
		return fmt.Errorf("natsjs: %w", err)
	}
	streams := []jetstream.StreamConfig{
		{Name: ChangesStream, Description: "dvsync: record-change events from upstream systems",
			Subjects: []string{ChangesSubjects}, Retention: jetstream.LimitsPolicy, MaxAge: t.ChangesMaxAge,
			Storage: jetstream.FileStorage, Replicas: t.Replicas, Duplicates: t.DuplicateWindow},
		{Name: ErrorsStream, Description: "dvsync: classified sync errors and resolutions",
			Subjects: []string{ErrorsSubjects}, Retention: jetstream.LimitsPolicy, MaxAge: t.ErrorsMaxAge,
			Storage: jetstream.FileStorage, Replicas: t.Replicas, Duplicates: t.DuplicateWindow},
	}
	// What is already as wanted is left alone: every process runs this at start, and an update
	// with nothing to change still makes the server rewrite the stream's configuration (and, in
	// nats-server 2.15, races with a consumer being created on it).
	for _, cfg := range streams {
		if s, err := js.Stream(ctx, cfg.Name); err == nil && sameStream(s.CachedInfo().Config, cfg) {
			continue
		}
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("natsjs: stream %s: %w", cfg.Name, err)
		}
	}
	want := t.WorkerConsumerConfig()
	if c, err := js.Consumer(ctx, ChangesStream, WorkerConsumer); err == nil && sameConsumer(c.CachedInfo().Config, want) {
		return nil
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, ChangesStream, want); err != nil {
		return fmt.Errorf("natsjs: consumer %s: %w", WorkerConsumer, err)
	}
	return nil
}

// sameStream reports whether a stream has every setting Ensure gives it.
func sameStream(have, want jetstream.StreamConfig) bool {
	return have.Description == want.Description && slices.Equal(have.Subjects, want.Subjects) &&
		have.Retention == want.Retention && have.MaxAge == want.MaxAge && have.Storage == want.Storage &&
		have.Replicas == want.Replicas && have.Duplicates == want.Duplicates
}

// sameConsumer reports whether the workers' consumer has every setting Ensure gives it.
func sameConsumer(have, want jetstream.ConsumerConfig) bool {
	return have.Description == want.Description && have.FilterSubject == want.FilterSubject &&
		have.DeliverPolicy == want.DeliverPolicy && have.AckPolicy == want.AckPolicy && have.AckWait == want.AckWait &&
		have.MaxDeliver == want.MaxDeliver && have.MaxAckPending == want.MaxAckPending && have.Replicas == want.Replicas &&
		len(have.BackOff) == 0
}

// EnsureWhenReady runs Ensure until it succeeds, for at most wait, while JetStream is not ready
// to answer: a cluster that has just started answers timeouts, no responders or "temporarily
// unavailable" until it has elected its leaders, and a process started with it must not exit on
// that. Any other error (a bad topology, JetStream not enabled, a permission) returns at once.
func EnsureWhenReady(ctx context.Context, js jetstream.JetStream, t Topology, wait time.Duration, log *slog.Logger) error {
	b := backoff.WithContext(backoff.NewExponentialBackOff(backoff.WithInitialInterval(250*time.Millisecond),
		backoff.WithMaxInterval(5*time.Second), backoff.WithMaxElapsedTime(wait)), ctx)
	return backoff.Retry(func() error {
		err := Ensure(ctx, js, t)
		if err == nil || !notReadyYet(ctx, err) {
			return backoff.Permanent(err)
		}
		log.Warn("JetStream is not ready yet; trying again", "err", err)
		return err
	}, b)
}

// notReadyYet reports whether a JetStream API error means the servers cannot answer yet.
func notReadyYet(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Code == 503 && apiErr.ErrorCode != jetstream.JSErrCodeJetStreamNotEnabled &&
			apiErr.ErrorCode != jetstream.JSErrCodeJetStreamNotEnabledForAccount
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, jetstream.ErrNoStreamResponse)
}
