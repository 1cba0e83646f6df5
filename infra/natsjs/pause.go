package natsjs

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// PauseSubject is where the API tells the workers that a table was paused or resumed, so that
// they read the stored state at once instead of at their next refresh. The notice carries
// nothing a worker trusts: it only asks for a read of the store.
const PauseSubject = "dvsync.pauses"

// TableBacklog counts the changes of one table that the workers' consumer has not acked yet:
// those stored after the consumer's ack floor on the table's subject. The count comes from an
// ephemeral consumer (in memory, no acks, removed at once) filtered on the subject from the floor
// on: JetStream answers it from its per-subject index, so it is cheap whatever the stream holds.
//
// It is an upper bound: a change of the table handled out of order (after one still waiting
// before it, of any table) counts until the floor passes it. For a paused table every change
// after the floor waits, so it is the backlog.
func TableBacklog(ctx context.Context, js jetstream.JetStream, table string) (uint64, error) {
	info, err := consumerInfo(ctx, js, ChangesStream, WorkerConsumer)
	if err != nil {
		return 0, fmt.Errorf("natsjs: backlog of %s: %w", table, err)
	}
	n, err := countFrom(ctx, js, table, info.AckFloor.Stream+1)
	if err != nil {
		return 0, fmt.Errorf("natsjs: backlog of %s: %w", table, err)
	}
	return n, nil
}

// Position is where the workers' consumer stands in the changes stream.
type Position struct {
	// Delivered is the last stream sequence handed out to a worker; AckFloor the one up to which
	// every change is acked.
	Delivered, AckFloor uint64
	// FirstSeq is the stream's oldest change: past a backlog period's start, the stream was
	// purged or recreated.
	FirstSeq uint64
	// Lag is the changes not acked yet: not handed out, and handed out but not acked.
	Lag uint64
}

// WorkerPosition reads the workers' consumer's position and the stream's first sequence.
func WorkerPosition(ctx context.Context, js jetstream.JetStream) (Position, error) {
	info, err := consumerInfo(ctx, js, ChangesStream, WorkerConsumer)
	if err != nil {
		return Position{}, fmt.Errorf("natsjs: workers' position: %w", err)
	}
	st, err := js.Stream(ctx, ChangesStream)
	if err != nil {
		return Position{}, fmt.Errorf("natsjs: workers' position: %w", err)
	}
	return Position{Delivered: info.Delivered.Stream, AckFloor: info.AckFloor.Stream, FirstSeq: st.CachedInfo().State.FirstSeq,
		Lag: info.NumPending + uint64(max(info.NumAckPending, 0))}, nil
}

// TableWaiting counts the table's changes stored after delivered: not handed to any worker yet.
// Unlike TableBacklog it does not count what workers hold or acked out of order, so a table
// running behind another that holds the ack floor (a paused one) shows what really waits.
func TableWaiting(ctx context.Context, js jetstream.JetStream, table string, delivered uint64) (uint64, error) {
	n, err := countFrom(ctx, js, table, delivered+1)
	if err != nil {
		return 0, fmt.Errorf("natsjs: waiting changes of %s: %w", table, err)
	}
	return n, nil
}

// countFrom counts the table's changes stored from the stream sequence seq on.
func countFrom(ctx context.Context, js jetstream.JetStream, table string, seq uint64) (uint64, error) {
	c, err := js.CreateConsumer(ctx, ChangesStream, jetstream.ConsumerConfig{
		FilterSubject: "dvsync.changes." + table,
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: max(seq, 1),
		AckPolicy: jetstream.AckNonePolicy, MemoryStorage: true, Replicas: 1,
		InactiveThreshold: 10 * time.Second, // gone by itself if the delete below is lost
	})
	if err != nil {
		return 0, err
	}
	n := c.CachedInfo().NumPending
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_ = js.DeleteConsumer(dctx, ChangesStream, c.CachedInfo().Name)
	return n, nil
}
