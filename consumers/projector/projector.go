// Package projector stores the errors stream in the errors ledger. It runs on watermill: the
// flow is one message at a time into a database, where watermill's router, middleware and
// redelivery delays fit (shared/reference/peers.md).
package projector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dvsync/dvsync/consumers/replay"
	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/events"
	"github.com/dvsync/dvsync/infra/natsjs"
	"github.com/dvsync/dvsync/infra/redact"
	"github.com/dvsync/dvsync/infra/storage"
	"github.com/dvsync/dvsync/infra/telemetry"
)

// Metadata keys the unmarshaler sets from the NATS message.
const (
	metaSubject   = "nats_subject"
	metaSequence  = "nats_stream_sequence"
	metaTimestamp = "nats_timestamp"
	metaDelivered = "nats_num_delivered"
)

// fallbackAfter is the delivery from which a message that still cannot be handled in full is kept
// in a lesser form rather than retried again: an error whose change cannot be read back is stored
// without a replayable change, a message that cannot be stored is kept as a minimal row. Only a
// database that refuses even that (it is down) keeps a message waiting.
const fallbackAfter = 3

// Projector stores error events and resolutions.
type Projector struct {
	Ledger Ledger
	// Changes is the changes stream (DVSYNC_CHANGES): the change an error names is read back from
	// it by sequence, and only such a change is kept for replay. Without it no error is replayable.
	Changes ChangeReader
	Metrics *telemetry.Metrics
	Log     *slog.Logger
	// Dependents, when set, replays the records that waited for a dependency once it is coupled.
	Dependents DependentReplayer
}

// Ledger is where the projector stores errors (a storage.Store).
type Ledger interface {
	RecordErrorChecked(ctx context.Context, ev domain.ErrorEvent, notReplayable string) error
	ResolveRecord(ctx context.Context, synced domain.RecordSynced) error
	ResolvePreflight(ctx context.Context, checked domain.PreflightChecked) error
}

// ChangeReader reads a message of the changes stream by sequence (jetstream.Stream).
type ChangeReader interface {
	GetMsg(ctx context.Context, seq uint64, opts ...jetstream.GetMsgOpt) (*jetstream.RawStreamMsg, error)
}

// DependentReplayer replays the records waiting for a dependency (replay.Replayer).
type DependentReplayer interface {
	ReplayWaitingOn(ctx context.Context, table, key string, failedAt time.Time) (int, error)
}

// waiting names a dependency whose waiting records may be replayed after a message is stored.
type waiting struct {
	table, key string
	failedAt   time.Time
}

// Handle stores one message of the errors stream. An error return nacks it (redelivered with a
// growing delay): a message is never acknowledged before it is stored, in full or, when that
// cannot be done (see fallback), as a minimal row. A panic is handled as a failure, so that it
// takes the same way out instead of a redelivery loop.
func (p *Projector) Handle(msg *message.Message) error {
	ctx := msg.Context()
	dep, err := guard(p, func() (waiting, error) { return p.project(ctx, msg) })
	if err != nil {
		return p.fallback(ctx, msg, err)
	}
	return p.replayWaitingOn(ctx, msg, dep)
}

// guard runs f, turning a panic into an error (and logging where it happened).
func guard[T any](p *Projector, f func() (T, error)) (v T, err error) {
	defer func() {
		if r := recover(); r != nil {
			p.Log.Error("the projector panicked", "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("projector: panic: %v", r)
		}
	}()
	return f()
}

// project stores one message in full.
func (p *Projector) project(ctx context.Context, msg *message.Message) (waiting, error) {
	subject := msg.Metadata.Get(metaSubject)
	if natsjs.IsResolvedSubject(subject) {
		var s domain.RecordSynced
		err := json.Unmarshal(msg.Payload, &s)
		if err == nil && s.Table == domain.PreflightTable && s.Key == "" {
			return waiting{}, p.resolvePreflight(ctx, msg, subject)
		}
		if err != nil || s.Table == "" || s.Key == "" {
			return waiting{}, p.store(ctx, p.unreadable(msg, subject, "a resolution event is not the JSON dvsync writes"), "")
		}
		if err := p.Ledger.ResolveRecord(ctx, s); err != nil {
			return waiting{}, err
		}
		p.Log.Info("errors resolved", "table", s.Table, "key", s.Key, "version", s.Version)
		return waiting{table: s.Table, key: s.Key}, nil
	}
	var ev domain.ErrorEvent
	if err := json.Unmarshal(msg.Payload, &ev); err != nil || ev.ID == "" || ev.Class == "" || ev.Kind == "" {
		return waiting{}, p.store(ctx, p.unreadable(msg, subject, "an error event is not the JSON dvsync writes"), "")
	}
	ev, notReplayable, err := p.readBack(ctx, ev, delivered(msg))
	if err != nil {
		return waiting{}, err
	}
	if err := p.store(ctx, ev, notReplayable); err != nil {
		return waiting{}, err
	}
	// The dependency may have been coupled while this error was on its way: replay it now, or
	// nothing else would.
	if ev.Kind == domain.KindDependencyNotCoupled {
		return waiting{table: ev.Details["dependency_table"], key: ev.Details["dependency_key"], failedAt: ev.OccurredAt}, nil
	}
	return waiting{}, nil
}

// resolvePreflight resolves the preflight errors a check looked at and no longer finds (a
// PreflightChecked: the table of a resolution without a key). Like an error event it is taken as
// published: whoever may publish on the error topics could also report gaps, and the next check
// corrects either. What it cannot be trusted with is bounded: it resolves only among the keys it
// lists, an outcome dated after it arrived counts as checked when it arrived (a future date
// would otherwise resolve gaps later checks report), and one on another subject or with a NUL in
// a key is kept as an invalid event.
func (p *Projector) resolvePreflight(ctx context.Context, msg *message.Message, subject string) error {
	var c domain.PreflightChecked
	if err := json.Unmarshal(msg.Payload, &c); err != nil || c.Gaps == nil || c.At.IsZero() {
		return p.store(ctx, p.unreadable(msg, subject, "a preflight outcome is not the JSON dvsync writes"), "")
	}
	if subject != natsjs.ResolvedSubject(domain.PreflightTable) {
		return p.store(ctx, p.unreadable(msg, subject, "a preflight outcome came on "+subject+", not on "+natsjs.ResolvedSubject(domain.PreflightTable)), "")
	}
	for _, k := range append(slices.Clip(c.Gaps), c.Keys...) {
		if strings.ContainsRune(k, 0) {
			return p.store(ctx, p.unreadable(msg, subject, "a preflight outcome names a key with a NUL, which no check has"), "")
		}
	}
	if c.Keys == nil {
		// An outcome of a dvsync from before outcomes named their keys: it resolves nothing.
		p.Log.Warn("a preflight outcome names no keys it checked, so it resolves nothing; the workers' next checks will", "at", c.At)
	}
	if arrived := arrival(msg); c.At.After(arrived) {
		p.Log.Warn("a preflight outcome is dated after it arrived; it counts as checked when it arrived", "at", c.At, "arrived", arrived)
		c.At = arrived
	}
	if err := p.Ledger.ResolvePreflight(ctx, c); err != nil {
		return err
	}
	p.Log.Info("preflight checked", "gaps", len(c.Gaps), "keys", len(c.Keys), "checked", c.Checked, "at", c.At)
	return nil
}

// arrival is when the errors stream stored the message (its timestamp, set by the server), or
// now when the message does not say.
func arrival(msg *message.Message) time.Time {
	if ns, err := strconv.ParseInt(msg.Metadata.Get(metaTimestamp), 10, 64); err == nil && ns > 0 {
		return time.Unix(0, ns).UTC()
	}
	return time.Now().UTC()
}

// fallback decides about a message that could not be stored in full. PostgreSQL refusing its
// values (a data error) will refuse them again, and a message that failed a few deliveries may
// well be one no retry stores: either is kept at once as a minimal row (an invalid_event setup
// error with the message's bytes and the reason), counted, and acknowledged, so that it never
// holds up the errors after it. Any other failure is retried; so is one that cannot store even
// the minimal row (the database is down): nothing is dropped.
func (p *Projector) fallback(ctx context.Context, msg *message.Message, err error) error {
	n := delivered(msg)
	var rejected *storage.RejectedError
	data := errors.As(err, &rejected)
	if !data && n < fallbackAfter {
		p.Log.Warn("storing an error event failed; it will be redelivered", "seq", msg.Metadata.Get(metaSequence), "delivered", n, "err", err)
		return err
	}
	cause, why := "retries", fmt.Sprintf("storing it failed %d times", n)
	if data {
		cause, why = "data", rejected.Reason
	}
	subject := msg.Metadata.Get(metaSubject)
	reason := fmt.Sprintf("this message of %s could not be stored in full (%s); its bytes are kept as they came", natsjs.ErrorsStream, why)
	if serr := p.store(ctx, p.unreadable(msg, subject, reason), ""); serr != nil {
		p.Log.Warn("storing an error event failed, in full and in a minimal form; it will be redelivered",
			"seq", msg.Metadata.Get(metaSequence), "delivered", n, "err", err, "minimal_err", serr)
		return fmt.Errorf("%w (a minimal row failed too: %w)", err, serr)
	}
	p.Metrics.ErrorsUnstorable.WithLabelValues(cause).Inc()
	p.Log.Error("an error event could not be stored in full and was kept as a minimal invalid_event row",
		"seq", msg.Metadata.Get(metaSequence), "subject", subject, "cause", cause, "err", err)
	return nil
}

// readBack replaces the change an error event carries by the one the changes stream holds at the
// sequence the event names, when that message is the change it names (same subject, event id,
// table, key and version). Only such a change may be replayed: an error event proves nothing
// (whoever may publish on the error topics could have written it), the changes stream holds what
// publishers sent. An error whose change cannot be read back keeps its own copy, for people to
// see, with the reason it is not replayable.
func (p *Projector) readBack(ctx context.Context, ev domain.ErrorEvent, delivered uint64) (domain.ErrorEvent, string, error) {
	d := ev.Delivery
	if p.Changes == nil {
		return ev, "the projector was started without the changes stream to read the change back from", nil
	}
	if d.Stream != natsjs.ChangesStream || d.Sequence == 0 {
		return ev, fmt.Sprintf("the error names no message of %s to read its change back from", natsjs.ChangesStream), nil
	}
	m, err := p.Changes.GetMsg(ctx, d.Sequence)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return ev, fmt.Sprintf("message %d of %s is gone (aged out or deleted), so the change cannot be read back", d.Sequence, natsjs.ChangesStream), nil
	case err != nil && delivered < fallbackAfter:
		return ev, "", fmt.Errorf("projector: read message %d of %s: %w", d.Sequence, natsjs.ChangesStream, err)
	case err != nil:
		return ev, fmt.Sprintf("message %d of %s could not be read (%v)", d.Sequence, natsjs.ChangesStream, err), nil
	}
	if m.Subject != d.Subject {
		return ev, fmt.Sprintf("message %d of %s was published on %s, not on %s as the error says", d.Sequence, natsjs.ChangesStream, m.Subject, d.Subject), nil
	}
	change, invalid := events.Decode(m.Subject, m.Header, m.Data)
	mismatch := ""
	switch {
	case ev.EventID != "" && change.ID != ev.EventID:
		mismatch = fmt.Sprintf("its event id is %q, not %q", change.ID, ev.EventID)
	case invalid != nil && ev.Kind != domain.KindInvalidEvent:
		mismatch = "it is not a valid change event, and the error is not about an invalid one"
	case invalid == nil && (change.Table != ev.Table || change.Key != ev.Key):
		mismatch = fmt.Sprintf("it is a change of %s, not of %s/%s", change.Ref(), ev.Table, ev.Key)
	case invalid == nil && ev.EventVersion != nil && *ev.EventVersion != change.Version:
		mismatch = fmt.Sprintf("it is version %d, not %d", change.Version, *ev.EventVersion)
	}
	if mismatch != "" {
		return ev, fmt.Sprintf("message %d of %s is not the change this error names: %s", d.Sequence, natsjs.ChangesStream, mismatch), nil
	}
	ev.Event, ev.EventHeaders = m.Data, redact.Headers(m.Header)
	if invalid == nil {
		v := change.Version
		ev.EventID, ev.EventVersion = change.ID, &v
	}
	return ev, "", nil
}

// replayWaitingOn replays the records waiting for table/key, if it is coupled. A failure nacks
// the message, so that the replay is tried again, for a few deliveries (fallbackAfter); then it
// is logged, counted (dvsync_replays_total{trigger="dependency",outcome="given_up"}) and the
// message acknowledged: the message is stored, the replay is only its side effect, and no
// replay failing for good may hold up the errors behind it. The waiting errors stay open, for
// the dependency's next resolution or a person's replay. A table or key no record can have
// (domain.CheckKey: a worker rejects such an event, so it is never coupled, and PostgreSQL
// refuses some of them) waits for nothing: it comes from someone else's message.
func (p *Projector) replayWaitingOn(ctx context.Context, msg *message.Message, w waiting) error {
	if p.Dependents == nil || w.table == "" || w.key == "" {
		return nil
	}
	if err := errors.Join(domain.CheckKey(w.table), domain.CheckKey(w.key)); err != nil {
		p.Log.Debug("no dependency replay: the dependency's table or key is not one a record can have",
			"seq", msg.Metadata.Get(metaSequence), "err", err)
		return nil
	}
	n, err := guard(p, func() (int, error) { return p.Dependents.ReplayWaitingOn(ctx, w.table, w.key, w.failedAt) })
	if n > 0 {
		p.Log.Info("replayed records that waited for a dependency", "table", w.table, "key", w.key, "records", n)
	}
	if err == nil {
		return nil
	}
	if d := delivered(msg); d < fallbackAfter {
		p.Log.Warn("replaying records that waited for a dependency failed; will retry", "table", w.table, "key", w.key, "delivered", d, "err", err)
		return err
	}
	p.Metrics.Replays.WithLabelValues("dependency", string(replay.GivenUp)).Inc()
	p.Log.Error("replaying records that waited for a dependency kept failing; they stay open for the next resolution or a person's replay",
		"table", w.table, "key", w.key, "delivered", delivered(msg), "err", err)
	return nil
}

func (p *Projector) store(ctx context.Context, ev domain.ErrorEvent, notReplayable string) error {
	if err := p.Ledger.RecordErrorChecked(ctx, ev, notReplayable); err != nil {
		return err
	}
	p.Metrics.ErrorsProjected.WithLabelValues(telemetry.Label(string(ev.Class)), telemetry.Label(string(ev.Kind))).Inc()
	p.Log.Info("error stored", "error_id", ev.ID, "class", ev.Class, "kind", ev.Kind, "table", ev.Table, "key", ev.Key)
	return nil
}

// delivered is the message's delivery count (1 when the server did not say).
func delivered(msg *message.Message) uint64 {
	n, err := strconv.ParseUint(msg.Metadata.Get(metaDelivered), 10, 64)
	if err != nil || n == 0 {
		return 1
	}
	return n
}

// unreadable keeps a message of the errors stream that cannot be stored as it is (someone else's
// message, or one PostgreSQL refused), with its bytes, as an invalid_event error instead of
// dropping it or blocking the projector. Its id and key name the message in the stream, so that
// a redelivery counts once and each such message has a row of its own.
func (p *Projector) unreadable(msg *message.Message, subject, reason string) domain.ErrorEvent {
	seq := msg.Metadata.Get(metaSequence)
	n, _ := strconv.ParseUint(seq, 10, 64)
	f := domain.InvalidEvent(reason)
	return domain.ErrorEvent{ID: "dvsync-projector-invalid-" + seq + "-" + msg.Metadata.Get(metaTimestamp), OccurredAt: time.Now().UTC(),
		Failure: *f, Table: "_errors", Key: "seq:" + seq, Stage: "project", Event: msg.Payload,
		Delivery:  domain.Delivery{Subject: subject, Stream: natsjs.ErrorsStream, Sequence: n, Delivered: delivered(msg)},
		CallStack: []domain.Stage{{Name: "project", At: time.Now().UTC(), Detail: reason}}}
}

// unmarshaler copies a NATS message into a watermill message with its subject, stream sequence
// and delivery count. It never fails, so a malformed message cannot loop (peers.md).
type unmarshaler struct{}

func (unmarshaler) Unmarshal(m *nats.Msg) (*message.Message, error) {
	id := m.Header.Get(nats.MsgIdHdr)
	if id == "" {
		id = watermill.NewUUID()
	}
	wm := message.NewMessage(id, m.Data)
	for k, v := range m.Header {
		if len(v) > 0 {
			wm.Metadata.Set(k, v[0])
		}
	}
	wm.Metadata.Set(metaSubject, m.Subject)
	if meta, err := m.Metadata(); err == nil {
		wm.Metadata.Set(metaSequence, strconv.FormatUint(meta.Sequence.Stream, 10))
		wm.Metadata.Set(metaTimestamp, strconv.FormatInt(meta.Timestamp.UnixNano(), 10))
		wm.Metadata.Set(metaDelivered, strconv.FormatUint(meta.NumDelivered, 10))
	}
	return wm, nil
}

// growingDelay naks with a delay doubling from 1s to a minute: a database outage is waited out
// without a hot loop, and without ever giving up.
type growingDelay struct{}

func (growingDelay) WaitTime(retry uint64) time.Duration {
	d := time.Second
	for i := uint64(1); i < retry && d < time.Minute; i++ {
		d *= 2
	}
	return min(d, time.Minute)
}

// Run consumes the errors stream through a durable consumer until ctx is cancelled. It owns
// conn: on shutdown it drains and closes it.
func Run(ctx context.Context, conn *nats.Conn, p *Projector) error {
	closed := make(chan struct{})
	conn.SetClosedHandler(func(*nats.Conn) { close(closed) })
	defer conn.Close()
	logger := watermill.NewSlogLogger(p.Log)
	sub, err := wmnats.NewSubscriberWithNatsConn(conn, wmnats.SubscriberSubscriptionConfig{
		Unmarshaler:      unmarshaler{},
		QueueGroupPrefix: natsjs.ProjectorConsumer,
		SubscribersCount: 1,
		AckWaitTimeout:   30 * time.Second,
		CloseTimeout:     10 * time.Second,
		NakDelay:         growingDelay{},
		JetStream: wmnats.JetStreamConfig{
			DurablePrefix: natsjs.ProjectorConsumer,
			// The server's ack wait exceeds watermill's own (30s), as peers.md advises; MaxDeliver
			// stays unlimited because an error must never be dropped by the projector.
			SubscribeOptions: []nats.SubOpt{nats.BindStream(natsjs.ErrorsStream), nats.AckExplicit(), nats.ManualAck(),
				nats.DeliverAll(), nats.AckWait(time.Minute), nats.MaxAckPending(64)},
		},
	}, logger)
	if err != nil {
		return fmt.Errorf("projector: subscriber: %w", err)
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 15 * time.Second}, logger)
	if err != nil {
		return err
	}
	// Handle takes a panic its own way; Recoverer only catches one in the fallback itself (its
	// minimal row), which is then nacked and retried rather than crash the projector.
	router.AddMiddleware(middleware.Recoverer)
	router.AddConsumerHandler("errors-ledger", natsjs.ErrorsSubjects, sub, p.Handle)

	// The router gets a context of its own, cancelled only after the connection is drained:
	// watermill-nats v2.1.3 closes its output channel as soon as the subscriber's context ends,
	// while a NATS callback may still be sending a message on it (a data race, and a possible
	// "send on closed channel" panic). Draining first unsubscribes, lets every callback that
	// holds a message hand it to the handler and ack it, and only then closes the connection.
	routerCtx, stopRouter := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRouter()
	routerDone := make(chan error, 1)
	go func() { routerDone <- router.Run(routerCtx) }()
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-routerDone:
		routerDone <- runErr
	}
	switch err := conn.Drain(); {
	case err == nil:
		<-closed // Drain closes the connection when done, or after its timeout (30s by default).
	case !errors.Is(err, nats.ErrConnectionClosed):
		p.Log.Warn("draining the projector's NATS connection", "err", err)
	}
	stopRouter()
	runErr = <-routerDone
	if cerr := sub.Close(); cerr != nil && !strings.Contains(cerr.Error(), "closed") {
		p.Log.Warn("closing projector subscriber", "err", cerr)
	}
	return runErr
}
