package natsjs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/dvsync/dvsync/infra/events"
)

// Change is one change event as the changes stream holds it.
type Change struct {
	Subject  string
	Sequence uint64
	Time     time.Time // when the stream stored it
	Headers  map[string][]string
	Data     []byte
}

// ChangeSearch is what a search for a record's newest change found, and how far it looked.
type ChangeSearch struct {
	Found *Change // nil: no change of the record among those read
	Read  int     // the table's changes read
	// Window is how many of the stream's newest messages (of every table) the search covered;
	// Windowed says the stream holds older ones it did not look at.
	Window   uint64
	Windowed bool
	// Complete says every change of the window was read; false when the time ran out first, so
	// that a newer change of the record may exist than Found.
	Complete bool
}

// ChangeFinder finds a record's newest change event in the changes stream, for a person
// looking at a source record (the dev source view). A change's key is in its payload, not its
// subject, so it reads the table's subject (dvsync.changes.<table>) with an ordered consumer, in
// order, and keeps the last change whose key matches. It is bounded: it stops at the stream's last
// message when the search began, reads only the newest Limit messages of the stream, and gives up
// after Timeout.
type ChangeFinder struct {
	JS jetstream.JetStream
	// Limit is how many of the stream's newest messages a search covers (DefaultChangeLimit when 0).
	Limit int
	// Timeout bounds one search (DefaultChangeTimeout when 0).
	Timeout time.Duration
}

// The bounds of a search when ChangeFinder does not set them.
const (
	DefaultChangeLimit   = 10000
	DefaultChangeTimeout = 3 * time.Second
)

// Newest returns the newest change of table/key among the stream's newest Limit messages. An
// error is JetStream not answering; not finding the record is no error (Found is nil).
func (f ChangeFinder) Newest(ctx context.Context, table, key string) (ChangeSearch, error) {
	limit, timeout := uint64(f.Limit), f.Timeout
	if limit == 0 {
		limit = DefaultChangeLimit
	}
	if timeout <= 0 {
		timeout = DefaultChangeTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	stream, err := f.JS.Stream(ctx, ChangesStream)
	if err != nil {
		return ChangeSearch{}, fmt.Errorf("natsjs: stream %s: %w", ChangesStream, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return ChangeSearch{}, fmt.Errorf("natsjs: stream %s: %w", ChangesStream, err)
	}
	first, last := info.State.FirstSeq, info.State.LastSeq
	res := ChangeSearch{Complete: true}
	if info.State.Msgs == 0 || last < first {
		return res, nil
	}
	start := first
	if last-first+1 > limit {
		start, res.Windowed = last-limit+1, true
	}
	res.Window = last - start + 1
	subject := events.Subject(table)

	// The newest change of the table is often the record's (someone just published it).
	if m, err := stream.GetLastMsgForSubject(ctx, subject); err == nil && m.Sequence >= start && m.Sequence <= last {
		if c := changeOf(m); keyOf(c) == key {
			res.Found, res.Read = c, 1
			return res, nil
		}
	}
	// The first change of the table in the window: without one the consumer would wait for
	// nothing until the time runs out.
	firstMsg, err := stream.GetMsg(ctx, start, jetstream.WithGetMsgSubject(subject))
	if errors.Is(err, jetstream.ErrMsgNotFound) || err == nil && firstMsg.Sequence > last {
		return res, nil
	}
	if err != nil {
		return ChangeSearch{}, fmt.Errorf("natsjs: reading %s: %w", subject, err)
	}
	cons, err := f.JS.OrderedConsumer(ctx, ChangesStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject}, DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq: firstMsg.Sequence, InactiveThreshold: 30 * time.Second})
	if err != nil {
		return ChangeSearch{}, fmt.Errorf("natsjs: consumer on %s: %w", subject, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(min(int(limit), 500)))
	if err != nil {
		return ChangeSearch{}, fmt.Errorf("natsjs: consumer on %s: %w", subject, err)
	}
	defer func() {
		it.Stop()
		// The server would drop it after InactiveThreshold; drop it now.
		if ci := cons.CachedInfo(); ci != nil {
			dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			_ = f.JS.DeleteConsumer(dctx, ChangesStream, ci.Name)
			dcancel()
		}
	}()
	for res.Read < int(res.Window) {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				res.Complete = false
				return res, nil
			}
			return ChangeSearch{}, fmt.Errorf("natsjs: reading %s: %w", subject, err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return ChangeSearch{}, fmt.Errorf("natsjs: reading %s: %w", subject, err)
		}
		if meta.Sequence.Stream > last {
			break // published after the search began
		}
		res.Read++
		c := &Change{Subject: msg.Subject(), Sequence: meta.Sequence.Stream, Time: meta.Timestamp, Headers: msg.Headers(), Data: msg.Data()}
		if keyOf(c) == key {
			res.Found = c
		}
		if meta.NumPending == 0 || meta.Sequence.Stream == last {
			break
		}
	}
	return res, nil
}

func changeOf(m *jetstream.RawStreamMsg) *Change {
	return &Change{Subject: m.Subject, Sequence: m.Sequence, Time: m.Time, Headers: m.Header, Data: m.Data}
}

// keyOf is a change's record key, read as the workers read it; "" when the event is too broken
// to name one.
func keyOf(c *Change) string {
	ev, _ := events.Decode(c.Subject, c.Headers, c.Data)
	return ev.Key
}
