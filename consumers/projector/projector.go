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
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/nats-io/nats.go"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/natsjs"
	"github.com/dvsync/dvsync/infra/telemetry"
)

// Metadata keys the unmarshaler sets from the NATS message.
const (
	metaSubject   = "nats_subject"
	metaSequence  = "nats_stream_sequence"
	metaDelivered = "nats_num_delivered"
)

// Projector stores error events and resolutions.
type Projector struct {
	Ledger  domain.ErrorLedger
	Metrics *telemetry.Metrics
	Log     *slog.Logger
	// Dependents, when set, replays the records that waited for a dependency once it is coupled.
	Dependents DependentReplayer
}

// DependentReplayer replays the records waiting for a dependency (replay.Replayer).
type DependentReplayer interface {
	ReplayWaitingOn(ctx context.Context, table, key string, failedAt time.Time) (int, error)
}

// Handle stores one message of the errors stream. An error return nacks it (redelivered with a
// growing delay): an error event is never acknowledged before it is stored.
func (p *Projector) Handle(msg *message.Message) error {
	ctx := msg.Context()
	subject := msg.Metadata.Get(metaSubject)
	if natsjs.IsResolvedSubject(subject) {
		var s domain.RecordSynced
		if err := json.Unmarshal(msg.Payload, &s); err != nil || s.Table == "" || s.Key == "" {
			return p.store(ctx, p.unreadable(msg, subject, "a resolution event is not the JSON dvsync writes"))
		}
		if err := p.Ledger.ResolveRecord(ctx, s); err != nil {
			return err
		}
		p.Log.Info("errors resolved", "table", s.Table, "key", s.Key, "version", s.Version)
		return p.replayWaitingOn(ctx, s.Table, s.Key, time.Time{})
	}
	var ev domain.ErrorEvent
	if err := json.Unmarshal(msg.Payload, &ev); err != nil || ev.ID == "" || ev.Class == "" || ev.Kind == "" {
		ev = p.unreadable(msg, subject, "an error event is not the JSON dvsync writes")
	}
	if err := p.store(ctx, ev); err != nil {
		return err
	}
	// The dependency may have been coupled while this error was on its way: replay it now, or
	// nothing else would.
	if ev.Kind == domain.KindDependencyNotCoupled {
		return p.replayWaitingOn(ctx, ev.Details["dependency_table"], ev.Details["dependency_key"], ev.OccurredAt)
	}
	return nil
}

// replayWaitingOn replays the records waiting for table/key, if it is coupled. A failure returns
// an error, so the message is redelivered and the replay tried again.
func (p *Projector) replayWaitingOn(ctx context.Context, table, key string, failedAt time.Time) error {
	if p.Dependents == nil || table == "" || key == "" {
		return nil
	}
	n, err := p.Dependents.ReplayWaitingOn(ctx, table, key, failedAt)
	if n > 0 {
		p.Log.Info("replayed records that waited for a dependency", "table", table, "key", key, "records", n)
	}
	if err != nil {
		p.Log.Warn("replaying records that waited for a dependency failed; will retry", "table", table, "key", key, "err", err)
	}
	return err
}

func (p *Projector) store(ctx context.Context, ev domain.ErrorEvent) error {
	if err := p.Ledger.RecordError(ctx, ev); err != nil {
		p.Log.Warn("storing error event failed; it will be redelivered", "error_id", ev.ID, "err", err)
		return err
	}
	p.Metrics.ErrorsProjected.WithLabelValues(string(ev.Class), string(ev.Kind)).Inc()
	p.Log.Info("error stored", "error_id", ev.ID, "class", ev.Class, "kind", ev.Kind, "table", ev.Table, "key", ev.Key)
	return nil
}

// unreadable keeps a message someone else put on the errors stream, with its bytes, as an
// invalid_event error instead of dropping it or blocking the projector.
func (p *Projector) unreadable(msg *message.Message, subject, reason string) domain.ErrorEvent {
	seq := msg.Metadata.Get(metaSequence)
	f := domain.InvalidEvent(reason)
	return domain.ErrorEvent{ID: "dvsync-projector-invalid-" + seq, OccurredAt: time.Now().UTC(), Failure: *f,
		Table: "_errors", Key: "seq:" + seq, Stage: "project", Event: msg.Payload,
		Delivery:  domain.Delivery{Subject: subject, Stream: natsjs.ErrorsStream},
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
	// Recoverer turns a panic into an error, so the message is nacked and retried, not lost.
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
