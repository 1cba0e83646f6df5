package natsjs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// PauseSubject is where the API tells the workers that a table was paused or resumed, so that
// they read the stored state at once instead of at their next refresh. The notice carries
// nothing a worker trusts: it only asks for a read of the store.
const PauseSubject = "dvsync.pauses"

// TableBacklog counts the changes of one table that the workers' consumer has not acked yet:
// those stored after the consumer's ack floor on the table's subject (see countFrom for the cost).
//
// It is an upper bound: a change of the table handled out of order (after one still waiting
// before it, of any table) counts until the floor passes it. For a paused table every change
// after the floor waits, so it is the backlog.
func TableBacklog(ctx context.Context, js jetstream.JetStream, table string) (uint64, error) {
	pos, err := WorkerPosition(ctx, js)
	if err != nil {
		return 0, fmt.Errorf("natsjs: backlog of %s: %w", table, err)
	}
	return pos.Backlog(ctx, table)
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

	js     jetstream.JetStream
	stream jetstream.Stream
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
		Lag: info.NumPending + uint64(max(info.NumAckPending, 0)), js: js, stream: st}, nil
}

// Waiting counts the table's changes stored after the delivered position: not handed to any
// worker yet. Unlike Backlog it does not count what workers hold or acked out of order, so a
// table running behind another that holds the ack floor (a paused one) shows what really waits.
func (p Position) Waiting(ctx context.Context, table string) (uint64, error) {
	n, err := p.countFrom(ctx, table, p.Delivered+1)
	if err != nil {
		return 0, fmt.Errorf("natsjs: waiting changes of %s: %w", table, err)
	}
	return n, nil
}

// Backlog counts the table's changes stored after the ack floor (TableBacklog).
func (p Position) Backlog(ctx context.Context, table string) (uint64, error) {
	n, err := p.countFrom(ctx, table, p.AckFloor+1)
	if err != nil {
		return 0, fmt.Errorf("natsjs: backlog of %s: %w", table, err)
	}
	return n, nil
}

// TableWaiting counts the table's changes stored after delivered (Position.Waiting).
func TableWaiting(ctx context.Context, js jetstream.JetStream, table string, delivered uint64) (uint64, error) {
	pos, err := WorkerPosition(ctx, js)
	if err != nil {
		return 0, fmt.Errorf("natsjs: waiting changes of %s: %w", table, err)
	}
	pos.Delivered = delivered
	return pos.Waiting(ctx, table)
}

// countFrom counts the table's changes stored from the stream sequence seq on. The table's last
// change is read first (a direct read of the stream, answered from its per-subject index): when
// it is before seq, nothing is counted. Only then does an ephemeral consumer (in memory, no acks,
// removed at once) filtered on the subject from seq on give the count: creating one is a
// proposal to the meta leader of a clustered JetStream, so it is kept for tables with changes
// after seq.
func (p Position) countFrom(ctx context.Context, table string, seq uint64) (uint64, error) {
	seq = max(seq, 1)
	subject := "dvsync.changes." + table
	last, err := p.stream.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil // none of the table's changes is stored
	}
	if err != nil {
		return 0, err
	}
	switch {
	case last.Sequence < seq:
		return 0, nil
	case last.Sequence == seq:
		return 1, nil
	}
	c, err := p.js.CreateConsumer(ctx, ChangesStream, jetstream.ConsumerConfig{
		FilterSubject: subject, DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: seq,
		AckPolicy: jetstream.AckNonePolicy, MemoryStorage: true, Replicas: 1,
		InactiveThreshold: 10 * time.Second, // gone by itself if the delete below is lost
	})
	if err != nil {
		return 0, err
	}
	n := c.CachedInfo().NumPending
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_ = p.js.DeleteConsumer(dctx, ChangesStream, c.CachedInfo().Name)
	return n, nil
}

// WorkerStream is the changes stream as a backlog keeper reads it (syncworker.StreamPosition):
// each Position is a reading that the counts after it use.
type WorkerStream struct {
	JS jetstream.JetStream

	mu  sync.Mutex
	pos Position
}

// Position reads the workers' consumer's delivered position and the stream's first sequence.
func (w *WorkerStream) Position(ctx context.Context) (delivered, firstSeq uint64, err error) {
	pos, err := WorkerPosition(ctx, w.JS)
	if err != nil {
		return 0, 0, err
	}
	w.mu.Lock()
	w.pos = pos
	w.mu.Unlock()
	return pos.Delivered, pos.FirstSeq, nil
}

func (w *WorkerStream) reading(ctx context.Context) (Position, error) {
	w.mu.Lock()
	pos := w.pos
	w.mu.Unlock()
	if pos.stream != nil {
		return pos, nil
	}
	return WorkerPosition(ctx, w.JS)
}

// Waiting counts the table's changes after delivered.
func (w *WorkerStream) Waiting(ctx context.Context, table string, delivered uint64) (uint64, error) {
	pos, err := w.reading(ctx)
	if err != nil {
		return 0, err
	}
	pos.Delivered = delivered
	return pos.Waiting(ctx, table)
}

// FromAckFloor counts the table's changes after the last reading's ack floor.
func (w *WorkerStream) FromAckFloor(ctx context.Context, table string) (uint64, error) {
	pos, err := w.reading(ctx)
	if err != nil {
		return 0, err
	}
	return pos.Backlog(ctx, table)
}
