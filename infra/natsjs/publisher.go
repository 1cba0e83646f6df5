package natsjs

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dvsync/dvsync/domain"
)

// Headers on error events, after Kafka Connect's dead-letter context headers: a subscriber can
// route on them without reading the body.
const (
	HeaderClass            = "Dvsync-Error-Class"
	HeaderKind             = "Dvsync-Error-Kind"
	HeaderStage            = "Dvsync-Error-Stage"
	HeaderTable            = "Dvsync-Table"
	HeaderKey              = "Dvsync-Key"
	HeaderSourceSubject    = "Dvsync-Source-Subject"
	HeaderSourceSequence   = "Dvsync-Source-Sequence"
	HeaderDelivered        = "Dvsync-Delivered"
	HeaderDataverseStatus  = "Dvsync-Dataverse-Status"
	HeaderDataverseCode    = "Dvsync-Dataverse-Code"
	HeaderCorrelationID    = "Dvsync-Correlation-Id"
	resolvedSubjectPrefix  = "dvsync.errors.resolved."
	errorSubjectPrefix     = "dvsync.errors."
	unknownTableSubjectTok = "_unknown"
)

var subjectToken = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// tableToken is a table name usable as a subject token; a malformed event's table may not be.
func tableToken(table string) string {
	if subjectToken.MatchString(table) {
		return table
	}
	return unknownTableSubjectTok
}

// ErrorSubject is dvsync.errors.<class>.<table>.
func ErrorSubject(class domain.Class, table string) string {
	return errorSubjectPrefix + string(class) + "." + tableToken(table)
}

// ResolvedSubject is dvsync.errors.resolved.<table>.
func ResolvedSubject(table string) string { return resolvedSubjectPrefix + tableToken(table) }

// IsResolvedSubject tells resolutions from errors on the errors stream.
func IsResolvedSubject(subject string) bool {
	return len(subject) > len(resolvedSubjectPrefix) && subject[:len(resolvedSubjectPrefix)] == resolvedSubjectPrefix
}

// Publisher publishes outcome events and waits for JetStream to store them.
type Publisher struct {
	JS jetstream.JetStream
}

// PublishError publishes a permanent failure with its id as Nats-Msg-Id, so that a worker that
// publishes it again after a crash is deduplicated.
// An event too large for the connection's max payload is published in its minimal form, so that
// every failure is reported, however large the change or Dataverse's answer.
func (p Publisher) PublishError(ctx context.Context, ev domain.ErrorEvent) error {
	data, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("natsjs: encode error event: %w", err)
	}
	if max := p.JS.Conn().MaxPayload(); max > 0 && int64(len(data)) > max-headerRoom {
		ev = ev.Minimal()
		if data, err = json.Marshal(ev); err != nil {
			return fmt.Errorf("natsjs: encode error event: %w", err)
		}
	}
	h := nats.Header{}
	h.Set(HeaderClass, string(ev.Class))
	h.Set(HeaderKind, string(ev.Kind))
	h.Set(HeaderStage, ev.Stage)
	h.Set(HeaderTable, ev.Table)
	h.Set(HeaderKey, ev.Key)
	h.Set(HeaderSourceSubject, ev.Delivery.Subject)
	h.Set(HeaderSourceSequence, strconv.FormatUint(ev.Delivery.Sequence, 10))
	h.Set(HeaderDelivered, strconv.FormatUint(ev.Delivery.Delivered, 10))
	if ev.CorrelationID != "" {
		h.Set(HeaderCorrelationID, ev.CorrelationID)
	}
	if dv := ev.Dataverse; dv != nil {
		h.Set(HeaderDataverseStatus, strconv.Itoa(dv.Status))
		h.Set(HeaderDataverseCode, dv.Code)
	}
	msg := &nats.Msg{Subject: ErrorSubject(ev.Class, ev.Table), Data: data, Header: h}
	if _, err := p.JS.PublishMsg(ctx, msg, jetstream.WithMsgID(ev.ID)); err != nil {
		return fmt.Errorf("natsjs: publish error event %s: %w", ev.ID, err)
	}
	return nil
}

// headerRoom is what an error event's headers may take of the max payload.
const headerRoom = 16 << 10

// PublishSynced tells the projector that a record which had failed is synced now.
func (p Publisher) PublishSynced(ctx context.Context, msgID string, s domain.RecordSynced) error {
	data, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("natsjs: encode resolution: %w", err)
	}
	if _, err := p.JS.Publish(ctx, ResolvedSubject(s.Table), data, jetstream.WithMsgID(msgID)); err != nil {
		return fmt.Errorf("natsjs: publish resolution of %s/%s: %w", s.Table, s.Key, err)
	}
	return nil
}

// PublishPreflight tells the projector which gaps a preflight check found, after their error
// events, so that it resolves the preflight errors the check no longer finds.
func (p Publisher) PublishPreflight(ctx context.Context, msgID string, c domain.PreflightChecked) error {
	c.Table = domain.PreflightTable
	data, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("natsjs: encode preflight outcome: %w", err)
	}
	if _, err := p.JS.Publish(ctx, ResolvedSubject(domain.PreflightTable), data, jetstream.WithMsgID(msgID)); err != nil {
		return fmt.Errorf("natsjs: publish preflight outcome: %w", err)
	}
	return nil
}
