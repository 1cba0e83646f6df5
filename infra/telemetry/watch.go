package telemetry

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/storage"
)

// ConsumerBacklog is what a JetStream consumer has not acknowledged yet.
type ConsumerBacklog struct {
	Pending     uint64 // not delivered yet
	AckPending  uint64 // delivered, not acknowledged yet
	Redelivered uint64 // delivered more than once and not acknowledged yet
	// Oldest is when the oldest message not acknowledged yet was stored in the stream; zero when
	// there is none.
	Oldest time.Time
}

// LedgerCounter is what the metrics ask a store about its errors ledger and couplings. It must
// stay cheap however large the ledger grows: it runs on a scrape, at most once per refresh.
type LedgerCounter interface {
	CountLedger(ctx context.Context) (storage.LedgerCounts, error)
}

// Refresh says how a watched metric is read at scrape time.
type Refresh struct {
	// Every bounds how often it is read: scrapes in between (several Prometheus servers, a
	// dashboard) get the last answer.
	Every time.Duration
	// Timeout bounds one read: a scrape must not hang while NATS or the database is away.
	Timeout time.Duration
	// OnError, when set, is told why a read failed (to log it).
	OnError func(error)
}

// WatchConsumer exports a JetStream consumer's backlog, read at scrape time as r says. When the
// read fails, the backlog is absent, dvsync_nats_consumer_info_up is 0 and
// dvsync_nats_consumer_info_errors_total grows.
func (m *Metrics) WatchConsumer(stream, consumer string, r Refresh, read func(context.Context) (ConsumerBacklog, error)) {
	// Constant labels: one collector per consumer (`dvsync dev` watches two on one registry).
	labels := prometheus.Labels{"stream": stream, "consumer": consumer}
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, labels) }
	pending := d("dvsync_nats_consumer_pending_messages", "Messages of the stream the consumer has not delivered yet.")
	ackPending := d("dvsync_nats_consumer_ack_pending_messages", "Messages the consumer delivered that are not acknowledged yet.")
	redelivered := d("dvsync_nats_consumer_redelivered_messages", "Messages delivered more than once and not acknowledged yet.")
	oldest := d("dvsync_nats_consumer_oldest_pending_age_seconds",
		"Age of the oldest message the consumer has not acknowledged yet (pending or ack pending), from its arrival in the stream; 0 when none.")
	m.Registry.MustRegister(&cached{
		Refresh: r,
		up:      d("dvsync_nats_consumer_info_up", "1 when the last read of the consumer's state from JetStream succeeded, else 0."),
		errors:  d("dvsync_nats_consumer_info_errors_total", "Reads of the consumer's state from JetStream that failed or timed out."),
		descs:   []*prometheus.Desc{pending, ackPending, redelivered, oldest},
		read: func(ctx context.Context) ([]prometheus.Metric, error) {
			b, err := read(ctx)
			if err != nil {
				return nil, err
			}
			age := 0.0
			if !b.Oldest.IsZero() {
				age = max(time.Since(b.Oldest).Seconds(), 0)
			}
			g := func(desc *prometheus.Desc, v float64) prometheus.Metric {
				return prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v)
			}
			return []prometheus.Metric{g(pending, float64(b.Pending)), g(ackPending, float64(b.AckPending)),
				g(redelivered, float64(b.Redelivered)), g(oldest, age)}, nil
		},
	})
}

// WatchLedger exports the open errors by class and kind, the oldest open error's age by class
// and the skipped records by table, counted at scrape time as r says; when the count fails they
// are absent and dvsync_ledger_stats_up is 0. Known kinds, classes and tables are exported at
// zero when none is open, so that an alert sees the first one arrive.
func (m *Metrics) WatchLedger(store LedgerCounter, r Refresh) {
	open := prometheus.NewDesc("dvsync_open_errors", "Errors in the ledger that are open or being replayed, by class and kind.",
		[]string{"class", "kind"}, nil)
	oldest := prometheus.NewDesc("dvsync_oldest_open_error_age_seconds",
		"Age of the oldest open error of the class, from its first occurrence; 0 when none is open.", []string{"class"}, nil)
	skipped := prometheus.NewDesc("dvsync_skipped_records",
		"Records skipped after repeated identical failures (their changes are kept, not sent), by table.", []string{"table"}, nil)
	m.Registry.MustRegister(&cached{
		Refresh: r,
		up:      prometheus.NewDesc("dvsync_ledger_stats_up", "1 when the last count of the errors ledger succeeded, else 0.", nil, nil),
		errors:  prometheus.NewDesc("dvsync_ledger_stats_errors_total", "Counts of the errors ledger that failed or timed out.", nil, nil),
		descs:   []*prometheus.Desc{open, oldest, skipped},
		read: func(ctx context.Context) ([]prometheus.Metric, error) {
			c, err := store.CountLedger(ctx)
			if err != nil {
				return nil, err
			}
			type classKind struct{ class, kind string }
			counts, first := map[classKind]int{}, map[string]time.Time{}
			for _, k := range KnownErrorKinds() {
				counts[classKind{string(domain.ClassOf(k)), string(k)}] = 0
			}
			for _, cl := range []domain.Class{domain.ClassCoupling, domain.ClassSetup} {
				first[string(cl)] = time.Time{}
			}
			for _, o := range c.Open {
				class := Label(string(o.Class))
				counts[classKind{class, Label(string(o.Kind))}] += o.Count
				if f, ok := first[class]; !ok || f.IsZero() || (!o.Oldest.IsZero() && o.Oldest.Before(f)) {
					first[class] = o.Oldest
				}
			}
			tables := map[string]int{}
			for t := range m.tables {
				tables[t] = 0
			}
			for t, n := range c.Skipped {
				tables[m.Table(t)] += n
			}
			var out []prometheus.Metric
			for ck, n := range counts {
				out = append(out, prometheus.MustNewConstMetric(open, prometheus.GaugeValue, float64(n), ck.class, ck.kind))
			}
			for class, f := range first {
				age := 0.0
				if !f.IsZero() {
					age = max(time.Since(f).Seconds(), 0)
				}
				out = append(out, prometheus.MustNewConstMetric(oldest, prometheus.GaugeValue, age, class))
			}
			for t, n := range tables {
				out = append(out, prometheus.MustNewConstMetric(skipped, prometheus.GaugeValue, float64(n), t))
			}
			return out, nil
		},
	})
}

// cached is a collector whose metrics are read as its Refresh says; scrapes in between get the
// same answer. It reports whether the last read succeeded (up) and counts the reads that failed
// (errors).
type cached struct {
	Refresh
	up, errors *prometheus.Desc
	descs      []*prometheus.Desc
	read       func(context.Context) ([]prometheus.Metric, error)

	mu       sync.Mutex // held while reading: concurrent scrapes wait for one read
	readAt   time.Time
	metrics  []prometheus.Metric
	ok       bool
	failures int
}

func (c *cached) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.up
	ch <- c.errors
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *cached) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.readAt.IsZero() || time.Since(c.readAt) >= c.Every {
		ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
		ms, err := c.read(ctx)
		cancel()
		c.readAt, c.ok = time.Now(), err == nil
		if err != nil {
			c.failures++
			ms = nil
			if c.OnError != nil {
				c.OnError(err)
			}
		}
		c.metrics = ms
	}
	for _, m := range c.metrics {
		ch <- m
	}
	up := 0.0
	if c.ok {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up)
	ch <- prometheus.MustNewConstMetric(c.errors, prometheus.CounterValue, float64(c.failures))
}
