package natsjs

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
)

// ThrottleSubject is where workers of one Dataverse user (one app registration) tell each other
// about service-protection throttling: Dataverse counts its limits per user, so a 429 for one
// worker means every worker of that user should wait.
func ThrottleSubject(user string) string {
	return "dvsync.throttle." + regexp.MustCompile(`[^A-Za-z0-9_-]`).ReplaceAllString(user, "_")
}

// MaxThrottleNotice is the furthest ahead a throttle notice may hold this process. Dataverse
// counts its service-protection limits over a 5-minute sliding window, so its Retry-After asks
// for no more than that; the extra minute allows for the clocks of two hosts to differ.
const MaxThrottleNotice = 6 * time.Minute

// maxThrottleNoticeBytes: a notice is about 100 bytes; anything far larger is not one and is not
// parsed.
const maxThrottleNoticeBytes = 1 << 10

type throttleNotice struct {
	Until    time.Time `json:"until"`
	Instance string    `json:"instance"`
}

var (
	errNoticeTooLarge = errors.New("larger than a throttle notice")
	errNoticeNoUntil  = errors.New("no until")
	errNoticeTooFar   = fmt.Errorf("until more than %s ahead", MaxThrottleNotice)
	errNoticeExpired  = errors.New("until has passed")
)

// readThrottleNotice decodes and bounds a notice.
func readThrottleNotice(data []byte, now time.Time) (throttleNotice, error) {
	var n throttleNotice
	if len(data) > maxThrottleNoticeBytes {
		return n, errNoticeTooLarge
	}
	if err := json.Unmarshal(data, &n); err != nil {
		return n, fmt.Errorf("not JSON: %w", err)
	}
	switch {
	case n.Until.IsZero():
		return n, errNoticeNoUntil
	case n.Until.Sub(now) > MaxThrottleNotice:
		return n, errNoticeTooFar
	case !n.Until.After(now):
		return n, errNoticeExpired
	}
	return n, nil
}

// Throttle is one process's part in the sharing of one Dataverse user's throttling.
type Throttle struct {
	nc       *nats.Conn
	subject  string
	self     string
	sub      *nats.Subscription
	log      *slog.Logger
	ignored  atomic.Uint64
	lastWarn atomic.Int64 // unix nanoseconds of the last warning about ignored notices
}

// ShareThrottle connects one process's Dataverse client to the others of the same user over core
// NATS (a passing signal, not worth storing): Notify publishes this process's 429s; hold is called
// with the others'.
//
// A notice is ignored, not clamped, when it is malformed or asks for more than MaxThrottleNotice:
// Dataverse never asks for that, so it comes from a broken or hostile publisher, and a clamped
// one would still hold every worker for the whole bound, as often as it is sent. Ignoring it costs
// at most a 429 of this process's own, after which it waits as Dataverse tells it. Ignored notices
// are counted (Ignored), logged at debug and summed up in a warning at most once a minute; their
// bytes are never logged. A notice that has expired on its way is dropped without a count.
func ShareThrottle(nc *nats.Conn, user string, hold func(until time.Time), log *slog.Logger) (*Throttle, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &Throttle{nc: nc, subject: ThrottleSubject(user), self: nuid.Next(), log: log}
	sub, err := nc.Subscribe(t.subject, func(m *nats.Msg) {
		n, err := readThrottleNotice(m.Data, time.Now())
		switch {
		case n.Instance == t.self: // its own, however long Dataverse asked it to wait
		case errors.Is(err, errNoticeExpired):
			t.log.Debug("throttle notice expired on its way", "subject", m.Subject, "late", time.Since(n.Until))
		case err != nil:
			t.ignore(m, err)
		default:
			hold(n.Until)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("natsjs: subscribe %s: %w", t.subject, err)
	}
	t.sub = sub
	return t, nil
}

func (t *Throttle) ignore(m *nats.Msg, reason error) {
	count := t.ignored.Add(1)
	t.log.Debug("throttle notice ignored", "subject", m.Subject, "bytes", len(m.Data), "reason", reason.Error())
	now, last := time.Now().UnixNano(), t.lastWarn.Load()
	if (last == 0 || now-last >= int64(time.Minute)) && t.lastWarn.CompareAndSwap(last, now) {
		t.log.Warn("throttle notices ignored: malformed, or holding workers longer than Dataverse would",
			"subject", m.Subject, "ignored_total", count, "last_reason", reason.Error())
	}
}

// Notify tells the other processes that Dataverse holds this user back until until. It is best
// effort: each process still learns from its own 429s.
func (t *Throttle) Notify(until time.Time) {
	data, _ := json.Marshal(throttleNotice{Until: until, Instance: t.self})
	_ = t.nc.Publish(t.subject, data)
}

// Ignored is the number of notices ignored as malformed or out of bounds.
func (t *Throttle) Ignored() uint64 { return t.ignored.Load() }

// Stop stops listening to the other processes.
func (t *Throttle) Stop() error { return t.sub.Unsubscribe() }
