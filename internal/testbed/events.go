package testbed

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/events"
)

// Change is one change event as an upstream system publishes it: a structured CloudEvent on
// dvsync.changes.<table>, its id as the Nats-Msg-Id.
type Change struct {
	Subject string
	MsgID   string
	Data    []byte
}

// NewChange encodes an upsert of a record's whole state. It panics if the event does not encode:
// the callers build their own events, so that is a bug of theirs.
func NewChange(source, table, id, key string, version int64, fields map[string]any) Change {
	ev := domain.ChangeEvent{ID: id, Type: domain.EventUpserted, Source: source, Table: table, Key: key, Version: version, Fields: fields}
	data, err := events.Encode(ev, time.Now().UTC())
	if err != nil {
		panic(err)
	}
	return Change{Subject: events.Subject(table), MsgID: id, Data: data}
}

// Publish sends a message until JetStream acknowledges it and returns its stream sequence. A
// retry is deduplicated by msgID, so an outage delays a load but never loses or doubles part of
// it.
func Publish(ctx context.Context, js jetstream.JetStream, subject, msgID string, data []byte, header nats.Header) (uint64, error) {
	delay := 100 * time.Millisecond
	for {
		msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
		for k, v := range header {
			msg.Header[k] = v
		}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ack, err := js.PublishMsg(pctx, msg, jetstream.WithMsgID(msgID))
		cancel()
		if err == nil {
			return ack.Sequence, nil
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		if err := Sleep(ctx, delay); err != nil {
			return 0, err
		}
		delay = min(2*delay, 2*time.Second)
	}
}
