package domain

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"time"
)

// Delivery is where a change event came from in the stream, like Kafka Connect's dead-letter
// context headers.
type Delivery struct {
	Subject   string `json:"subject"`
	Stream    string `json:"stream,omitempty"`
	Sequence  uint64 `json:"sequence,omitempty"`
	Delivered uint64 `json:"delivered,omitempty"`
}

// ErrorEvent is what a worker publishes to dvsync.errors.<class>.<table> for a permanent failure,
// and what the projector stores. Its JSON is the contract of the error topics.
type ErrorEvent struct {
	ID         string    `json:"id"` // also the Nats-Msg-Id
	OccurredAt time.Time `json:"occurred_at"`
	Failure
	Table  string `json:"table"`
	Key    string `json:"key"`
	Entity string `json:"entity,omitempty"`
	RowID  string `json:"row_id,omitempty"`
	// EventID, EventType and EventVersion describe the change event that failed, when it could be read.
	EventID      string    `json:"event_id,omitempty"`
	EventType    EventType `json:"event_type,omitempty"`
	EventVersion *int64    `json:"event_version,omitempty"`
	Delivery     Delivery  `json:"delivery"`
	Stage        string    `json:"stage"`
	// CorrelationID ties the error to the publisher's request or trace.
	CorrelationID string  `json:"correlation_id,omitempty"`
	CallStack     []Stage `json:"call_stack"`
	// Event is the original message body, byte for byte, when it is at most MaxEmbeddedEvent
	// bytes; EventHeaders its headers. EventSize is its size either way: the change itself stays
	// in the changes stream at Delivery.Sequence, where the projector reads it back.
	Event        []byte              `json:"event,omitempty"`
	EventHeaders map[string][]string `json:"event_headers,omitempty"`
	EventSize    int                 `json:"event_size,omitempty"`
	// Stripped marks an error event cut down by Minimal because the full one could not be
	// published.
	Stripped bool `json:"stripped,omitempty"`
}

// MaxEmbeddedEvent bounds the change bytes an error event carries, so that a large change that
// fails can always be reported.
const MaxEmbeddedEvent = 64 << 10

// maxMinimalDetails bounds the details a minimal error event keeps.
const maxMinimalDetails = 16

// detailRank puts the details that name a record's dependency before the others.
func detailRank(key string) int {
	if key == "dependency_table" || key == "dependency_key" {
		return 0
	}
	return 1
}

// Minimal is the error event stripped of everything that can make it large (the change, its
// headers, the call stack, long texts): what is left always fits in a message. The details stay,
// bounded: they name what the record waits for (a dependency_not_coupled error's dependency is
// how it is replayed once the dependency is coupled).
func (ev ErrorEvent) Minimal() ErrorEvent {
	m := ev
	m.Stripped, m.Event, m.EventHeaders, m.CallStack = true, nil, nil, nil
	m.Message, m.Resolution = Truncate(ev.Message, 2048), Truncate(ev.Resolution, 1024)
	m.Details = nil
	keys := make([]string, 0, len(ev.Details))
	for k := range ev.Details {
		keys = append(keys, k)
	}
	// What a replay needs goes first, the rest in a stable order.
	slices.SortFunc(keys, func(a, b string) int {
		return cmp.Or(cmp.Compare(detailRank(a), detailRank(b)), strings.Compare(a, b))
	})
	for _, k := range keys[:min(len(keys), maxMinimalDetails)] {
		if m.Details == nil {
			m.Details = map[string]string{}
		}
		m.Details[Truncate(k, 64)] = Truncate(ev.Details[k], MaxKeyBytes)
	}
	if dv := ev.Dataverse; dv != nil {
		m.Dataverse = &DataverseError{Status: dv.Status, Code: dv.Code, Message: Truncate(dv.Message, 2048)}
	}
	m.Key, m.EventID, m.CorrelationID = Truncate(ev.Key, MaxKeyBytes), Truncate(ev.EventID, MaxKeyBytes), Truncate(ev.CorrelationID, 256)
	return m
}

// RecordSynced is published to dvsync.errors.resolved.<table> when a record that had failed
// syncs: the projector resolves its open errors up to Version.
type RecordSynced struct {
	Table   string    `json:"table"`
	Key     string    `json:"key"`
	Version int64     `json:"version"`
	RowID   string    `json:"row_id,omitempty"`
	At      time.Time `json:"at"`
}

// ErrorLedger stores errors for people to see. Both calls are idempotent.
type ErrorLedger interface {
	RecordError(ctx context.Context, ev ErrorEvent) error
	ResolveRecord(ctx context.Context, synced RecordSynced) error
}
