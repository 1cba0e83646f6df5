package storage

import (
	"crypto/sha256"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/dvsync/dvsync/domain"
)

// Bounds of stored text. Names and ids are short in every real event; a key may be long; other
// text is bounded so that one hostile event cannot fill the ledger.
const (
	NameMax = 256
	IDMax   = 1024
	KeyMax  = 8 << 10
	TextMax = 64 << 10
)

// Clean makes s storable in any store: valid UTF-8 without NUL (PostgreSQL's text and jsonb
// refuse both; each bad byte becomes U+FFFD), and at most max bytes. A longer value keeps its
// start and the SHA-256 of the whole, so that two long values (two keys, two ids) stay two.
func Clean(s string, max int) string {
	raw := s
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	s = strings.ReplaceAll(s, "\x00", "\uFFFD")
	if len(s) <= max {
		return s
	}
	suffix := fmt.Sprintf("…[%d bytes, sha256 %x]", len(raw), sha256.Sum256([]byte(raw)))
	cut := max - len(suffix)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + suffix
}

// CleanEvent cleans every text of an error event, the ones stored as JSON included, so that no
// event, however malformed, fails to be stored for its values.
func CleanEvent(ev domain.ErrorEvent) domain.ErrorEvent {
	ev.ID = Clean(ev.ID, IDMax)
	if ev.OccurredAt.IsZero() { // an event that says not when: it is stored now
		ev.OccurredAt = time.Now().UTC()
	}
	ev.Class, ev.Kind = domain.Class(Clean(string(ev.Class), NameMax)), domain.Kind(Clean(string(ev.Kind), NameMax))
	ev.Table, ev.Key = Clean(ev.Table, NameMax), Clean(ev.Key, KeyMax)
	ev.Message, ev.Resolution = Clean(ev.Message, TextMax), Clean(ev.Resolution, TextMax)
	ev.Entity, ev.RowID, ev.Stage = Clean(ev.Entity, NameMax), Clean(ev.RowID, NameMax), Clean(ev.Stage, NameMax)
	ev.EventID, ev.EventType = Clean(ev.EventID, IDMax), domain.EventType(Clean(string(ev.EventType), NameMax))
	ev.CorrelationID = Clean(ev.CorrelationID, IDMax)
	ev.Delivery.Subject, ev.Delivery.Stream = Clean(ev.Delivery.Subject, IDMax), Clean(ev.Delivery.Stream, NameMax)
	if ev.Details != nil {
		d := make(map[string]string, len(ev.Details))
		for k, v := range ev.Details {
			d[Clean(k, NameMax)] = Clean(v, TextMax)
		}
		ev.Details = d
	}
	if dv := ev.Dataverse; dv != nil {
		ev.Dataverse = &domain.DataverseError{Status: dv.Status, Code: Clean(dv.Code, NameMax), Message: Clean(dv.Message, TextMax)}
	}
	stack := make([]domain.Stage, len(ev.CallStack))
	for i, st := range ev.CallStack {
		stack[i] = domain.Stage{Name: Clean(st.Name, NameMax), At: st.At, Detail: Clean(st.Detail, TextMax),
			Request: Clean(st.Request, TextMax), Response: Clean(st.Response, TextMax)}
	}
	ev.CallStack = stack
	ev.EventHeaders = cleanHeaders(ev.EventHeaders)
	return ev
}

func cleanHeaders(h map[string][]string) map[string][]string {
	if h == nil {
		return nil
	}
	out := make(map[string][]string, len(h))
	for k, vs := range h {
		c := make([]string, len(vs))
		for i, v := range vs {
			c[i] = Clean(v, TextMax)
		}
		out[Clean(k, IDMax)] = c
	}
	return out
}

// PageLimit is the number of errors a page holds: limit when it is 1 to 1000, else 100.
func PageLimit(limit int) int {
	if limit <= 0 || limit > 1000 {
		return 100
	}
	return limit
}

// CouplingLimit is the number of couplings a list holds: limit when it is 1 to 1000, else 200.
func CouplingLimit(limit int) int {
	if limit <= 0 || limit > 1000 {
		return 200
	}
	return limit
}

// Cursor is the position after e in the newest-first order of the errors (last seen, id): its
// seconds and nanoseconds apart, so that any time a store holds has one.
func Cursor(e StoredError) string {
	return fmt.Sprintf("%d.%09d_%d", e.LastSeen.Unix(), e.LastSeen.Nanosecond(), e.ID)
}

// ParseCursor reads a Cursor back; a cursor no page gave is ErrBadCursor.
func ParseCursor(c string) (lastSeen time.Time, id int64, err error) {
	at, ids, ok := strings.Cut(c, "_")
	secs, nanos, dot := strings.Cut(at, ".")
	s, err1 := strconv.ParseInt(secs, 10, 64)
	n, err2 := strconv.ParseInt(nanos, 10, 64)
	i, err3 := strconv.ParseInt(ids, 10, 64)
	if !ok || !dot || err1 != nil || err2 != nil || err3 != nil || n < 0 || n > 999999999 {
		return time.Time{}, 0, ErrBadCursor
	}
	return time.Unix(s, n).UTC(), i, nil
}

// ReasonStaleReplay is why a replay that found a newer version synced resolved its error.
const ReasonStaleReplay = "replay not sent: a newer version of the record synced since"

// SyncedBeforeStored is why an error reaching the ledger after its version synced is stored resolved.
func SyncedBeforeStored(v int64) string {
	return fmt.Sprintf("version %d synced before this error was stored", v)
}
