package natsjs

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/dvsync/dvsync/infra/telemetry"
)

// Backlog reads what a durable consumer has not acknowledged yet, for the metrics
// (telemetry.Metrics.WatchConsumer): the workers' pull consumer or the projector's push consumer.
type Backlog struct {
	JS       jetstream.JetStream
	Stream   string
	Consumer string

	mu     sync.Mutex
	stream jetstream.Stream // looked up once, to read the oldest message's time
}

// Read asks JetStream for the consumer's counts and, when something is not acknowledged yet, for
// the time of the first message after the ack floor: every message before it is acknowledged, so
// it is the oldest one waiting. Two small requests, three when the stream was not looked up yet.
func (b *Backlog) Read(ctx context.Context) (telemetry.ConsumerBacklog, error) {
	info, err := consumerInfo(ctx, b.JS, b.Stream, b.Consumer)
	if err != nil {
		return telemetry.ConsumerBacklog{}, fmt.Errorf("natsjs: consumer %s: %w", b.Consumer, err)
	}
	out := telemetry.ConsumerBacklog{Pending: info.NumPending, AckPending: uint64(max(info.NumAckPending, 0)),
		Redelivered: uint64(max(info.NumRedelivered, 0))}
	if out.Pending+out.AckPending == 0 {
		return out, nil
	}
	st, err := b.streamHandle(ctx)
	if err != nil {
		return telemetry.ConsumerBacklog{}, err
	}
	filter := info.Config.FilterSubject
	if filter == "" {
		filter = ">" // the consumer takes every subject of its stream
	}
	// The first message at or after the floor on the consumer's subjects: the one at floor+1 may
	// have aged out of the stream.
	m, err := st.GetMsg(ctx, info.AckFloor.Stream+1, jetstream.WithGetMsgSubject(filter))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		// Acknowledged and gone since the counts were read: nothing older is waiting.
	case err != nil:
		return telemetry.ConsumerBacklog{}, fmt.Errorf("natsjs: oldest message of consumer %s: %w", b.Consumer, err)
	default:
		out.Oldest = m.Time
	}
	return out, nil
}

func (b *Backlog) streamHandle(ctx context.Context) (jetstream.Stream, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stream == nil {
		st, err := b.JS.Stream(ctx, b.Stream)
		if err != nil {
			return nil, fmt.Errorf("natsjs: stream %s: %w", b.Stream, err)
		}
		b.stream = st
	}
	return b.stream, nil
}

// consumerInfo reads a durable consumer's state, whether it is a pull consumer (the workers') or
// a push consumer (the projector's, which watermill creates).
func consumerInfo(ctx context.Context, js jetstream.JetStream, stream, name string) (*jetstream.ConsumerInfo, error) {
	c, err := js.Consumer(ctx, stream, name)
	if err == nil {
		return c.CachedInfo(), nil
	}
	if !errors.Is(err, jetstream.ErrNotPullConsumer) {
		return nil, err
	}
	pc, err := js.PushConsumer(ctx, stream, name)
	if err != nil {
		return nil, err
	}
	return pc.CachedInfo(), nil
}
