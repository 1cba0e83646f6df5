package syncworker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/redact"
)

// handle is the whole life of one message, in this order and for these reasons:
//
//  1. decode (done by the dispatcher): a message that breaks the contract is reported as an
//     invalid_event setup error with its bytes and acked, so it never blocks the stream;
//  2. sync, retrying transient failures in process with backoff (Retry-After as the least
//     wait), bounded by HandleTimeout so that the ack deadline is never passed;
//  3. still transient: nak with a delay, so that JetStream redelivers later (to any worker);
//     from the MaxDeliver-th delivery, or once the retry budget is spent, the failure becomes a
//     dataverse_unavailable error instead (the consumer has no delivery limit, so a change is
//     never dropped: a nak always brings it back);
//  4. permanent failure: publish the error event and only then ack, so that the outcome is
//     durable before the change leaves the stream's pending set;
//  5. success: the coupling was committed by the sync; publish the resolution if the record
//     had failed before, then ack.
//
// The work runs on its own context, not the Run context: a shutdown lets it finish, within the
// shutdown grace.
func (w *Worker) handle(work context.Context, j job) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(work, w.Config.HandleTimeout)
	defer cancel()
	log := w.Log.With("event_id", j.event.ID, "subject", j.msg.Subject(), "seq", j.meta.Sequence.Stream,
		"delivered", j.meta.NumDelivered, "table", j.event.Table, "key", j.event.Key)
	table := w.Metrics.Table(j.event.Table)
	defer func() { w.Metrics.HandleDuration.WithLabelValues(table).Observe(time.Since(start).Seconds()) }()

	if j.invalid != nil {
		log.Warn("invalid change event", "reason", j.invalid.Details["reason"])
		w.report(ctx, log, j, j.invalid, []domain.Stage{w.stage("decode", j.invalid.Details["reason"])}, "invalid")
		return
	}

	if w.Pauses.Paused(j.event.Table) {
		// The table is paused: the change waits in the stream, unacked, and comes back after the
		// delay; per record, the version rule keeps the newest once the table runs again.
		w.Metrics.EventsHandled.WithLabelValues(table, "paused").Inc()
		w.nak(j, w.Config.PausedDelay)
		return
	}

	out, err := w.syncWithRetry(ctx, log, j)
	if out.Overwrites > 0 {
		log.Info("the row had changed in Dataverse since dvsync's last write; overwritten", "overwrites", out.Overwrites)
		w.Metrics.Overwrites.WithLabelValues(table).Add(float64(out.Overwrites))
	}
	if errors.Is(err, domain.ErrStoreRejected) {
		f := domain.InvalidEvent("the coupling store cannot hold this record: " + domain.Truncate(err.Error(), 300))
		w.report(ctx, log, j, f, []domain.Stage{w.stage("decode", ""), w.stage("sync", err.Error())}, "invalid")
		return
	}
	if err != nil {
		w.retryLater(ctx, log, j, err)
		return
	}
	switch out.Result {
	case domain.ResultFailed, domain.ResultSkipped:
		// A skipped record's change is kept with its open error (the projector stores the newest
		// change there, for a retry) and is not sent.
		w.report(ctx, log, j, out.Failure, append([]domain.Stage{w.stage("decode", "")}, out.Stages...), string(out.Result))
		return
	case domain.ResultStale:
		log.Debug("stale change skipped")
	default:
		log.Debug("change applied", "outcome", out.Result, "row_id", out.RowID)
	}
	if out.ResolvesErrors {
		synced := domain.RecordSynced{Table: j.event.Table, Key: j.event.Key, Version: j.event.Version, RowID: out.RowID.String(), At: time.Now().UTC()}
		msgID := fmt.Sprintf("dvsync-synced-%s-%s-%d", j.event.Table, j.event.Key, j.event.Version)
		if err := w.publish(ctx, func(ctx context.Context) error { return w.Outcomes.PublishSynced(ctx, msgID, synced) }); err != nil {
			log.Error("publishing resolution; the change will be redelivered", "err", err)
			w.nak(j, w.Config.RedeliveryDelay(j.meta.NumDelivered))
			return
		}
	}
	w.ack(log, j, string(out.Result))
}

// syncWithRetry runs the sync until it succeeds, fails permanently, or its retry budget is spent.
func (w *Worker) syncWithRetry(ctx context.Context, log *slog.Logger, j job) (domain.Outcome, error) {
	var (
		out        domain.Outcome
		retryAfter time.Duration
	)
	deadline, _ := ctx.Deadline()
	// Keep a fifth of the budget to publish and ack after the last attempt.
	budget := time.Until(deadline) * 4 / 5
	b := &retryAfterBackOff{BackOff: backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(200*time.Millisecond), backoff.WithMaxInterval(10*time.Second),
		backoff.WithMaxElapsedTime(budget)), retryAfter: &retryAfter, deadline: time.Now().Add(budget)}
	op := func() error {
		var err error
		out, err = w.Syncer.Sync(ctx, j.event)
		if err == nil {
			return nil
		}
		if errors.Is(err, domain.ErrStoreRejected) {
			return backoff.Permanent(err)
		}
		retryAfter = 0
		var f *domain.Failure
		kind := "store"
		switch {
		case errors.As(err, &f):
			retryAfter, kind = f.RetryAfter, string(f.Kind)
		case errors.Is(err, domain.ErrRecordBusy):
			// Another worker has the record (a redelivery raced it): it is done within its handle
			// timeout, and this change is then applied after it, or found stale.
			kind = "busy"
		}
		w.Metrics.TransientRetries.WithLabelValues(w.Metrics.Table(j.event.Table), kind).Inc()
		if kind == "busy" {
			log.Debug("record busy in another worker", "err", err)
		} else {
			log.Warn("transient failure", "kind", kind, "err", err, "retry_after", retryAfter)
		}
		return err
	}
	err := backoff.Retry(op, backoff.WithContext(b, ctx))
	if err != nil && retryAfter > 0 {
		return out, &waitError{err: err, wait: retryAfter}
	}
	return out, err
}

// waitError carries Dataverse's Retry-After past the retry loop into the nak delay.
type waitError struct {
	err  error
	wait time.Duration
}

func (e *waitError) Error() string { return e.err.Error() }
func (e *waitError) Unwrap() error { return e.err }

// retryAfterBackOff waits at least Retry-After and gives up rather than pass the deadline.
type retryAfterBackOff struct {
	backoff.BackOff
	retryAfter *time.Duration
	deadline   time.Time
}

func (b *retryAfterBackOff) NextBackOff() time.Duration {
	d := b.BackOff.NextBackOff()
	if d == backoff.Stop {
		return d
	}
	d = max(d, *b.retryAfter)
	if time.Now().Add(d).After(b.deadline) {
		return backoff.Stop
	}
	return d
}

// retryLater naks a transiently failing message with a delay; when its retry budget or its
// deliveries are spent it is parked as an error instead, so that nothing is dropped.
func (w *Worker) retryLater(ctx context.Context, log *slog.Logger, j job, err error) {
	if errors.Is(ctx.Err(), context.Canceled) {
		// The worker is stopping and cancelled the change's calls: another worker takes it at once.
		log.Info("change given back on shutdown")
		w.nak(j, 0)
		return
	}
	age := time.Since(j.meta.Timestamp)
	deliveries := int(j.meta.NumDelivered) >= w.Config.MaxDeliver
	if resumed := w.Pauses.ResumedAt(j.event.Table); j.meta.Timestamp.Before(resumed) {
		// The change waited through a pause: its deliveries then were not tries, and its retry
		// budget runs from the resume.
		age, deliveries = time.Since(resumed), false
	}
	spent := w.Config.RetryBudget > 0 && age >= w.Config.RetryBudget
	if spent || deliveries {
		var f *domain.Failure
		final := domain.Unprocessable(err, j.meta.NumDelivered)
		if errors.As(err, &f) {
			final = domain.DataverseUnavailable(f, j.meta.NumDelivered)
		}
		w.report(ctx, log, j, final, []domain.Stage{w.stage("decode", ""), w.stage("sync", err.Error())}, "failed")
		return
	}
	delay := w.Config.RedeliveryDelay(j.meta.NumDelivered)
	var we *waitError
	if errors.As(err, &we) {
		delay = max(delay, we.wait)
	}
	if w.Config.RetryBudget > 0 {
		// The last attempt lands at the end of the budget, not a long delay after it.
		delay = max(min(delay, w.Config.RetryBudget-age), 0)
	}
	log.Warn("change will be redelivered", "delay", delay, "err", err)
	w.Metrics.EventsHandled.WithLabelValues(w.Metrics.Table(j.event.Table), "retried").Inc()
	w.nak(j, delay)
}

// report publishes a permanent failure and acks the change once the error event is stored.
func (w *Worker) report(ctx context.Context, log *slog.Logger, j job, f *domain.Failure, stages []domain.Stage, outcome string) {
	ev := w.errorEvent(ctx, j, f, stages, outcome)
	log.Warn("sync failed", "class", f.Class, "kind", f.Kind, "message", f.Message)
	if err := w.publish(ctx, func(ctx context.Context) error { return w.Outcomes.PublishError(ctx, ev) }); err != nil {
		// Whatever made the full event fail (its size, most likely), the minimal one names the
		// failure and where the change is; only when NATS takes neither is the change redelivered.
		log.Warn("publishing error event; trying its minimal form", "err", err)
		if err := w.publish(ctx, func(ctx context.Context) error { return w.Outcomes.PublishError(ctx, ev.Minimal()) }); err != nil {
			log.Error("publishing error event; the change will be redelivered", "err", err)
			w.nak(j, w.Config.RedeliveryDelay(j.meta.NumDelivered))
			return
		}
	}
	w.Metrics.SyncErrors.WithLabelValues(string(f.Class), string(f.Kind), w.Metrics.Table(ev.Table)).Inc()
	if f.Unclassified() {
		// Counted once it is reported: no classifier rule knew the error, so one is missing.
		w.Metrics.Unclassified.WithLabelValues(w.Metrics.Table(ev.Table)).Inc()
	}
	w.ack(log, j, outcome)
}

func (w *Worker) errorEvent(ctx context.Context, j job, f *domain.Failure, stages []domain.Stage, outcome string) domain.ErrorEvent {
	ev := domain.ErrorEvent{
		// One id per stored change and kind: a worker that crashed after publishing publishes a
		// duplicate that JetStream drops and the projector counts once. The stored timestamp keeps
		// ids unique when a stream is re-created and its sequences start again at 1.
		ID:         fmt.Sprintf("dvsync-err-%s-%d-%d-%s", j.meta.Stream, j.meta.Sequence.Stream, j.meta.Timestamp.UnixNano(), f.Kind),
		OccurredAt: time.Now().UTC(),
		Failure:    *f,
		Table:      j.event.Table,
		Key:        j.event.Key,
		EventID:    j.event.ID,
		EventType:  j.event.Type,
		Delivery: domain.Delivery{Subject: j.msg.Subject(), Stream: j.meta.Stream, Sequence: j.meta.Sequence.Stream,
			Delivered: j.meta.NumDelivered},
		Stage:         "sync",
		CorrelationID: correlationID(j),
		CallStack:     append([]domain.Stage{w.stage("receive", fmt.Sprintf("%s seq %d delivery %d", j.msg.Subject(), j.meta.Sequence.Stream, j.meta.NumDelivered))}, stages...),
		EventHeaders:  redact.Headers(j.msg.Headers()),
		EventSize:     len(j.msg.Data()),
	}
	if len(j.msg.Data()) <= domain.MaxEmbeddedEvent {
		ev.Event = j.msg.Data()
	}
	if j.invalid == nil {
		v := j.event.Version
		ev.EventVersion = &v
		if outcome == string(domain.ResultSkipped) {
			ev.Stage = "skipped"
		}
		if m, ok := w.Syncer.Mappings.For(j.event.Table); ok {
			ev.Entity = m.Entity
		}
		if c, err := w.Syncer.Store.Coupling(ctx, j.event.Table, j.event.Key); err == nil && c.Coupled() {
			ev.RowID = c.RowID.String()
			// The page names the error's Dataverse row by it.
			if c.RowName != "" && ev.Details["row_name"] == "" {
				ev.Details = maps.Clone(ev.Details)
				if ev.Details == nil {
					ev.Details = map[string]string{}
				}
				ev.Details["row_name"] = c.RowName
			}
		}
	} else {
		ev.Stage = "decode"
		// A malformed event has no trustworthy record: it is stored under its subject's table and
		// its stream sequence, one row each.
		ev.Table = strings.TrimPrefix(j.msg.Subject(), "dvsync.changes.")
		ev.Key = fmt.Sprintf("seq:%d", j.meta.Sequence.Stream)
	}
	return ev
}

func (w *Worker) stage(name, detail string) domain.Stage {
	return domain.Stage{Name: name, At: time.Now().UTC(), Detail: detail}
}

// publishTimeout is how long the worker waits for JetStream to store an outcome event. During a
// NATS leader change or reconnect a confirmation can be lost; waiting for it as long as the
// handle timeout would stall the lane (and the messages queued behind it) for that long.
const publishTimeout = 10 * time.Second

// publish stores an outcome event within publishTimeout.
func (w *Worker) publish(ctx context.Context, send func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	return send(ctx)
}

// ack acks without waiting for JetStream to confirm: the outcome is durable already, and a
// change whose ack is lost is redelivered and found stale (or its error event deduplicated).
// Waiting for each confirmation would cost a round trip per change.
func (w *Worker) ack(log *slog.Logger, j job, outcome string) {
	if err := j.msg.Ack(); err != nil {
		log.Warn("ack not sent; the change will be redelivered and found stale", "err", err)
	} else {
		w.Progress.ackedOne(j.msg.Subject()) // a lost ack is counted when its redelivery is acked
	}
	table := w.Metrics.Table(j.event.Table)
	w.Metrics.EventsHandled.WithLabelValues(table, outcome).Inc()
	if !j.meta.Timestamp.IsZero() {
		w.Metrics.ChangeLatency.WithLabelValues(table).Observe(time.Since(j.meta.Timestamp).Seconds())
	}
}

func (w *Worker) nak(j job, delay time.Duration) {
	var err error
	if delay > 0 {
		err = j.msg.NakWithDelay(delay)
	} else {
		err = j.msg.Nak()
	}
	if err != nil {
		w.Log.Warn("nak failed; the change is redelivered after the ack wait", "seq", j.meta.Sequence.Stream, "err", err)
	}
}

// correlationID ties an error to the publisher's request: its Dvsync-Correlation-Id or W3C
// traceparent header, else the change event's id.
func correlationID(j job) string {
	h := j.msg.Headers()
	for _, k := range []string{"Dvsync-Correlation-Id", "traceparent"} {
		if v := h.Get(k); v != "" {
			return v
		}
	}
	if j.event.ID != "" {
		return j.event.ID
	}
	return h.Get("Nats-Msg-Id")
}
