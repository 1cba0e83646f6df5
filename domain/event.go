package domain

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// EventType says whether a change event carries a record's new state or its deletion.
type EventType string

const (
	EventUpserted EventType = "dvsync.record.upserted"
	EventDeleted  EventType = "dvsync.record.deleted"
)

// ChangeEvent is one record change published by an upstream system, already unwrapped from its
// CloudEvents envelope.
type ChangeEvent struct {
	ID      string    // CloudEvent id, also the JetStream Nats-Msg-Id
	Type    EventType // upserted or deleted
	Source  string    // upstream system and company
	Table   string
	Key     string
	Version int64
	// Fields is the whole current state of the record, named as in Business Central's API v2.0.
	Fields map[string]any
	// Retry is set when a person asked to retry the record: a skipped record is sent again.
	Retry bool
}

// Ref names the record as "<table>/<key>", the form used in subjects, logs and messages.
func (e ChangeEvent) Ref() string { return e.Table + "/" + e.Key }

// EventData is the `data` member of a change event as the contract defines it.
type EventData struct {
	Table   string         `json:"table"`
	Key     string         `json:"key"`
	Version *int64         `json:"version"`
	Fields  map[string]any `json:"fields"`
}

// ParseEventData decodes and validates the `data` member. Numbers stay json.Number so that
// amounts keep their precision until they are written.
func ParseEventData(raw []byte) (EventData, error) {
	var d EventData
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	if err := dec.Decode(&d); err != nil {
		return d, fmt.Errorf("data is not a JSON object with table, key, version and fields: %w", err)
	}
	switch {
	case strings.TrimSpace(d.Table) == "":
		return d, fmt.Errorf("data.table is missing")
	case strings.TrimSpace(d.Key) == "":
		return d, fmt.Errorf("data.key is missing")
	case CheckKey(d.Key) != nil:
		return d, fmt.Errorf("data.key %w", CheckKey(d.Key))
	case d.Version == nil:
		return d, fmt.Errorf("data.version is missing")
	case *d.Version < 0:
		return d, fmt.Errorf("data.version %d is negative", *d.Version)
	}
	return d, nil
}

// MaxKeyBytes bounds a record key (and a lookup's key value). Keys name records in subjects,
// message ids, headers and database indexes; no source system's key comes near it.
const MaxKeyBytes = 1024

// CheckKey says why s cannot be a record key: too long, not UTF-8, or holding control characters
// (which break logs, terminals, headers and database text).
func CheckKey(s string) error {
	switch {
	case len(s) > MaxKeyBytes:
		return fmt.Errorf("is %d bytes long, more than %d", len(s), MaxKeyBytes)
	case !utf8.ValidString(s):
		return fmt.Errorf("is not valid UTF-8")
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		return fmt.Errorf("contains control characters")
	}
	return nil
}

// CheckID says why s cannot be a CloudEvent id dvsync keeps: the same rules as a key.
func CheckID(s string) error { return CheckKey(s) }
