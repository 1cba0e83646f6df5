// Package events reads and writes dvsync's change events: CloudEvents 1.0 in JSON structured
// mode, or in binary mode with ce-* NATS headers, carrying {table, key, version, fields}.
package events

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/dvsync/dvsync/domain"
)

// SubjectPrefix is the subject prefix of change events: dvsync.changes.<table>.
const SubjectPrefix = "dvsync.changes."

// Subject is the subject change events of a table are published to.
func Subject(table string) string { return SubjectPrefix + table }

// Decode reads one change event. Every way an event can break the contract is an invalid_event
// failure whose reason is one sentence for the publisher.
func Decode(subject string, headers map[string][]string, data []byte) (domain.ChangeEvent, *domain.Failure) {
	ce, reason := envelope(headers, data)
	if reason != "" {
		return domain.ChangeEvent{}, domain.InvalidEvent(reason)
	}
	ev := domain.ChangeEvent{ID: ce.ID(), Type: domain.EventType(ce.Type()), Source: ce.Source()}
	if err := domain.CheckID(ev.ID); err != nil {
		ev.ID = "" // not kept: it would break what it is written into
		return ev, domain.InvalidEvent("the CloudEvent id " + err.Error())
	}
	if ev.Type != domain.EventUpserted && ev.Type != domain.EventDeleted {
		return ev, domain.InvalidEvent(fmt.Sprintf("type %q is neither %s nor %s", ce.Type(), domain.EventUpserted, domain.EventDeleted))
	}
	if ct := ce.DataContentType(); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return ev, domain.InvalidEvent(fmt.Sprintf("datacontenttype %q is not application/json", ct))
	}
	d, err := domain.ParseEventData(ce.Data())
	if err != nil {
		return ev, domain.InvalidEvent(err.Error())
	}
	ev.Table, ev.Key, ev.Version, ev.Fields = d.Table, d.Key, *d.Version, d.Fields
	if table, ok := strings.CutPrefix(subject, SubjectPrefix); ok && table != d.Table {
		return ev, domain.InvalidEvent(fmt.Sprintf("data.table %q does not match the subject %s", d.Table, subject))
	}
	if s := ce.Subject(); s != "" && s != ev.Ref() {
		return ev, domain.InvalidEvent(fmt.Sprintf("CloudEvent subject %q is not %q (table/key)", s, ev.Ref()))
	}
	if ev.Type == domain.EventUpserted && ev.Fields == nil {
		return ev, domain.InvalidEvent("an upserted event needs data.fields with the record's whole state")
	}
	return ev, nil
}

// envelope reads the CloudEvent in binary mode when the ce-specversion header is present, else in
// structured mode.
func envelope(headers map[string][]string, data []byte) (event.Event, string) {
	get := func(name string) string {
		for k, v := range headers {
			if strings.EqualFold(k, name) && len(v) > 0 {
				return v[0]
			}
		}
		return ""
	}
	ce := event.New()
	if spec := get("ce-specversion"); spec != "" {
		if spec != event.CloudEventsVersionV1 {
			return ce, fmt.Sprintf("ce-specversion %q is not 1.0", spec)
		}
		ce.SetID(get("ce-id"))
		ce.SetType(get("ce-type"))
		ce.SetSource(get("ce-source"))
		ce.SetSubject(get("ce-subject"))
		if ct := get("content-type"); ct != "" {
			ce.SetDataContentType(ct)
		}
		ce.DataEncoded = data
	} else {
		if !json.Valid(data) {
			return ce, "the message is not JSON (expected a CloudEvents 1.0 JSON event, or ce-* headers for binary mode)"
		}
		if err := json.Unmarshal(data, &ce); err != nil {
			return ce, "the message is not a CloudEvents 1.0 JSON event: " + err.Error()
		}
	}
	if err := ce.Validate(); err != nil {
		return ce, "the CloudEvent is invalid: " + strings.ReplaceAll(err.Error(), "\n", "; ")
	}
	return ce, ""
}

// Encode writes a change event in JSON structured mode, as a publisher would.
func Encode(ev domain.ChangeEvent, at time.Time) ([]byte, error) {
	ce := event.New()
	ce.SetID(ev.ID)
	ce.SetType(string(ev.Type))
	ce.SetSource(ev.Source)
	ce.SetSubject(ev.Ref())
	ce.SetTime(at)
	version := ev.Version
	if err := ce.SetData(event.ApplicationJSON, domain.EventData{Table: ev.Table, Key: ev.Key, Version: &version, Fields: ev.Fields}); err != nil {
		return nil, err
	}
	return json.Marshal(ce)
}
