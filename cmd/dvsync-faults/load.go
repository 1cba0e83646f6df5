package main

// The load: well-formed customers in interleaved rounds of versions, partly out of order, some
// waiting for a currency coupled only at the end, and the malformed and hostile messages.

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dvsync/dvsync/infra/events"
	"github.com/dvsync/dvsync/internal/testbed"
)

const (
	// eagerCurrency is coupled before the load: most customers use it.
	eagerCurrency = "EUR"
	// lateCurrency is published only after the load: its customers fail with a coupling error
	// first, and are replayed automatically once it is coupled.
	lateCurrency = "USD"
	// neverCurrency is never published: the decodable poison messages wait for it, so that each
	// must end in the errors ledger.
	neverCurrency = "ZZZ"
	source        = "faults://dvsync-faults"
)

// Message is one publication.
type Message struct {
	Subject string
	MsgID   string
	Data    []byte
	Header  nats.Header
	Bad     *BadMessage // set for a malformed or hostile message
}

// Plan is the load of one scenario.
type Plan struct {
	Good    []Message // in publishing order
	Newest  map[string]int64
	Waiting map[string]bool // customers of lateCurrency
}

func customerKey(i int) string { return fmt.Sprintf("C%05d", i) }

// late: every tenth customer uses the currency coupled only after the load.
func late(i int) bool { return i%10 == 3 }

// swapped: every third customer has its newest version published before the one before it.
func swapped(i int) bool { return i%3 == 0 }

// NewPlan lays out customers × versions: version v of every customer goes out in round v,
// shuffled within the round, except that a swapped customer's newest version goes out a round
// early and the one before it a round late, so a worker sees it after the newer one.
func NewPlan(run string, seed uint64, customers, versions int) Plan {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	p := Plan{Newest: map[string]int64{}, Waiting: map[string]bool{}}
	rounds := make([][]Message, versions+1)
	for i := range customers {
		key := customerKey(i)
		currency := eagerCurrency
		if late(i) {
			currency = lateCurrency
			p.Waiting[key] = true
		}
		p.Newest[key] = int64(versions)
		for v := 1; v <= versions; v++ {
			round := v
			if swapped(i) && versions >= 2 {
				switch v {
				case versions:
					round = versions - 1
				case versions - 1:
					round = versions
				}
			}
			fields := map[string]any{"number": key, "displayName": fmt.Sprintf("%s v%d", key, v),
				"currencyCode": currency, "creditLimit": float64(v * 100)}
			rounds[round] = append(rounds[round], customerEvent(fmt.Sprintf("%s-%s-v%d", run, key, v), key, int64(v), fields))
		}
	}
	for _, r := range rounds {
		rng.Shuffle(len(r), func(a, b int) { r[a], r[b] = r[b], r[a] })
		p.Good = append(p.Good, r...)
	}
	return p
}

func customerEvent(id, key string, version int64, fields map[string]any) Message {
	return changeEvent("customer", id, key, version, fields)
}

func changeEvent(table, id, key string, version int64, fields map[string]any) Message {
	c := testbed.NewChange(source, table, id, key, version, fields)
	return Message{Subject: c.Subject, MsgID: c.MsgID, Data: c.Data}
}

// CurrencyEvent couples a currency.
func CurrencyEvent(run, code string) Message {
	return changeEvent("currency", fmt.Sprintf("%s-currency-%s", run, code), code, 1,
		map[string]any{"code": code, "displayName": "Currency " + code})
}

// Flood is how many copies of each kind of bad message the poison scenario publishes.
type Flood struct {
	Invalid int // undecodable or contract-breaking: not JSON, not a CloudEvent, unknown table, wrong field type
	// Ledger are the ones whose error event the ledger may fail to store: a NUL in the CloudEvent
	// id or in a header value, a lookup value over 8 kB. More of them than the projector's
	// MaxAckPending (64) shows whether they stop every later error from being stored.
	Ledger int
	Lane   int // hostile keys: control characters, a NUL, 2 kB
	Huge   int // events near 1 MiB that fail
}

// PoisonMessages are the malformed and hostile messages of a flood. Every decodable one waits for
// neverCurrency, so that each must end as an error in the ledger, whatever else it breaks.
func PoisonMessages(run string, fl Flood) []Message {
	var out []Message
	add := func(name string, i int, m Message) {
		m.Bad.Name = fmt.Sprintf("%s #%d", name, i)
		out = append(out, m)
	}
	raw := func(i int, kind string, data []byte) Message {
		return Message{Subject: events.Subject("customer"), MsgID: fmt.Sprintf("%s-poison-%s-%d", run, kind, i), Data: data, Bad: &BadMessage{}}
	}
	waiting := func(kind, key string, i int, fields map[string]any) Message {
		id := fmt.Sprintf("%s-poison-%s-%d", run, kind, i)
		f := map[string]any{"number": fmt.Sprintf("P%d", i), "displayName": "poison " + kind, "currencyCode": neverCurrency}
		for k, v := range fields {
			f[k] = v
		}
		m := customerEvent(id, key, 1, f)
		m.Bad = &BadMessage{Key: key, ID: id}
		return m
	}
	for i := range fl.Invalid {
		add("not JSON", i, raw(i, "notjson", fmt.Appendf(nil, "this is not JSON {%d", i)))
		add("not a CloudEvent", i, raw(i, "notce", fmt.Appendf(nil, `{"table":"customer","key":"P-NOTCE-%d","version":1,"fields":{}}`, i)))
		unknown := changeEvent("nosuchtable", fmt.Sprintf("%s-poison-table-%d", run, i), fmt.Sprintf("P-TABLE-%03d", i), 1, map[string]any{"x": 1})
		unknown.Bad = &BadMessage{Key: fmt.Sprintf("P-TABLE-%03d", i), ID: unknown.MsgID}
		add("unknown table", i, unknown)
		add("field of the wrong type", i, waiting("type", fmt.Sprintf("P-TYPE-%03d", i), i, map[string]any{"creditLimit": "a lot"}))
	}
	for i := range fl.Ledger {
		// The CloudEvent id carries a NUL; the message id stays clean (another kind tests headers).
		m := waiting("nulid", fmt.Sprintf("P-NULID-%03d", i), i, nil)
		nulID := fmt.Sprintf("%s-poison-nul\x00id-%d", run, i)
		m = withEventID(m, nulID)
		m.Bad.ID = nulID
		add("NUL in the CloudEvent id", i, m)

		m = waiting("nulhdr", fmt.Sprintf("P-NULHDR-%03d", i), i, nil)
		m.Header = nats.Header{"X-Faults-Note": []string{"before\x00after"}}
		add("NUL in a header value", i, m)

		add("lookup value over 8 kB", i, waiting("biglookup", fmt.Sprintf("P-BIGLOOKUP-%03d", i), i,
			map[string]any{"currencyCode": noise(run, i, 9000)}))
	}
	for i := range fl.Lane {
		add("control characters in the key", i, waiting("ctlkey", fmt.Sprintf("P-CTL-\x1b[31m\x07\r\n-%03d", i), i, nil))
		add("NUL in the key", i, waiting("nulkey", fmt.Sprintf("P-NULKEY-\x00-%03d", i), i, nil))
		add("2 kB key", i, waiting("longkey", fmt.Sprintf("P-LONG-%03d-", i)+noise(run, i, 2048), i, nil))
	}
	for i := range fl.Huge {
		// Near 1 MiB, and just under the server's max_payload with its headers: each can be
		// published, but an error event that embeds the whole change cannot be.
		add("event near 1 MiB that fails", i, waiting("huge", fmt.Sprintf("P-HUGE-%03d", i), i,
			map[string]any{"notes": strings.Repeat("x", 1000*1000)}))
		add("event near max_payload that fails", i, waiting("maxpayload", fmt.Sprintf("P-MAXPAYLOAD-%03d", i), i,
			map[string]any{"notes": strings.Repeat("x", testbed.MaxPayload-64<<10)}))
	}
	return out
}

// noise is n letters and digits that do not compress: PostgreSQL compresses a long repetitive
// value enough to fit in an index, so a long value must be noise to test the size limits.
func noise(run string, i, n int) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	h := fnv.New64a()
	h.Write([]byte(run))
	rng := rand.New(rand.NewPCG(h.Sum64(), uint64(i)))
	b := make([]byte, n)
	for j := range b {
		b[j] = alphabet[rng.IntN(len(alphabet))]
	}
	return string(b)
}

// withEventID re-encodes m with another CloudEvent id.
func withEventID(m Message, id string) Message {
	ev, f := events.Decode(m.Subject, nil, m.Data)
	if f != nil {
		panic(f)
	}
	ev.ID = id
	n := changeEvent(ev.Table, id, ev.Key, ev.Version, ev.Fields)
	n.MsgID, n.Bad = m.MsgID, m.Bad
	return n
}

// Interleave spreads extra over msgs between the fractions from and to of it.
func Interleave(msgs, extra []Message, from, to float64) []Message {
	if len(extra) == 0 {
		return msgs
	}
	lo, hi := int(from*float64(len(msgs))), int(to*float64(len(msgs)))
	step := float64(hi-lo) / float64(len(extra))
	out := make([]Message, 0, len(msgs)+len(extra))
	j := 0
	for k, e := range extra {
		pos := lo + int(float64(k)*step)
		out = append(out, msgs[j:pos]...)
		out = append(out, e)
		j = pos
	}
	return append(out, msgs[j:]...)
}

// Loader publishes messages at a steady rate, retrying each until JetStream acknowledges it (a
// retried publish is deduplicated by its message id), so a NATS outage delays the load but never
// loses part of it.
type Loader struct {
	JS   jetstream.JetStream
	Msgs []Message
	Rate float64 // messages per second

	published atomic.Int64
	mu        sync.Mutex
	bad       []BadMessage
}

// Run publishes every message; it returns early only when ctx ends.
func (l *Loader) Run(ctx context.Context) error {
	start := time.Now()
	for i, m := range l.Msgs {
		if due := start.Add(time.Duration(float64(i) / l.Rate * float64(time.Second))); time.Until(due) > 0 {
			if err := testbed.Sleep(ctx, time.Until(due)); err != nil {
				return err
			}
		}
		seq, err := publish(ctx, l.JS, m)
		if err != nil {
			return err
		}
		if m.Bad != nil {
			b := *m.Bad
			b.Seq = seq
			l.mu.Lock()
			l.bad = append(l.bad, b)
			l.mu.Unlock()
		}
		l.published.Add(1)
	}
	return nil
}

// Bad is the bad messages published so far, with their stream sequences.
func (l *Loader) Bad() []BadMessage {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]BadMessage(nil), l.bad...)
}

// Published is how many messages are acknowledged.
func (l *Loader) Published() int { return int(l.published.Load()) }

// WaitProgress returns once the given fraction of the messages is published.
func (l *Loader) WaitProgress(ctx context.Context, frac float64) error {
	want := int(frac * float64(len(l.Msgs)))
	return testbed.WaitFor(ctx, 24*time.Hour, 50*time.Millisecond, func() bool { return l.Published() >= want })
}

// publish sends m until JetStream acknowledges it and returns its stream sequence.
func publish(ctx context.Context, js jetstream.JetStream, m Message) (uint64, error) {
	return testbed.Publish(ctx, js, m.Subject, m.MsgID, m.Data, m.Header)
}
