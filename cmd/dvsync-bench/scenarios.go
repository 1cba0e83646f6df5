package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dvsync/dvsync/internal/testbed"
)

// Scenario is one measurement, run from a clean system.
type Scenario struct {
	Name  string
	About string
	// Fast scenarios are repeated (-repeat); the sustained ones run once.
	Fast  bool
	Model Model
	Run   func(ctx context.Context, s *System) (Measurement, error)
	// Goal says what the table checks for the scenario; nil: none.
	Goal func(row Row, t *Table) (text string, met bool)
}

// Measurement is what one run of a scenario measured.
type Measurement struct {
	Events  int
	Rate    float64 // events per second
	Elapsed time.Duration
	// Latency: publish → coupling recorded (row written), for the latency scenario.
	HasLatency bool
	P50, P99   time.Duration
	RSS        int64 // peak resident set of a worker, bytes (0: not a worker's run)
	Users      int
	// Exec is the Dataverse execution time spent in the measured span: the emulator's count
	// when it reports one, else the client's (the workers', the pipe's) request durations.
	Exec      time.Duration
	ExecFrom  string // "emulator", "client", or "" when not measured
	Throttled int64  // 429 answers
	Throttles string // where Throttled comes from, as ExecFrom ("" when not measured)
	Notes     []string
}

// summary is a run's line in the progress output.
func (m Measurement) summary(err error) string {
	if err != nil {
		return "not measured: " + err.Error()
	}
	s := fmt.Sprintf("%d events in %s, %.0f/s", m.Events, m.Elapsed.Round(10*time.Millisecond), m.Rate)
	if m.HasLatency {
		s += fmt.Sprintf(", p50 %s, p99 %s", ms(m.P50), ms(m.P99))
	}
	if m.RSS > 0 {
		s += fmt.Sprintf(", peak RSS %.0f MB", float64(m.RSS)/(1<<20))
	}
	if m.ExecFrom != "" {
		s += fmt.Sprintf(", %.0f %% of the execution-time ceiling", 100*m.ceiling())
	}
	if m.Throttles != "" {
		s += fmt.Sprintf(", %d 429s", m.Throttled)
	}
	for _, n := range m.Notes {
		s += "; " + n
	}
	return s
}

// ceiling is the fraction of the users' execution-time ceiling the run spent.
func (m Measurement) ceiling() float64 {
	if m.Elapsed <= 0 || m.Users == 0 {
		return 0
	}
	return m.Exec.Seconds() / (m.Elapsed.Seconds() * ceilingPerUser * float64(m.Users))
}

// perUserGoal is the records per second one application user's execution-time ceiling allows
// when each request carries 100 records: 4 s / (20 ms + 100 × 5 ms) × 100.
const perUserGoal = 770

// Scenarios are every scenario, in the order they run.
func Scenarios() []Scenario {
	return []Scenario{
		{Name: "raw", About: "baseline: raw JetStream durable pull consume+ack of the backlog, in the bench process", Fast: true, Run: rawConsume},
		{Name: "naive", About: "baseline: a naive pipe, in the bench process: pull, one PATCH per message to the emulator, ack", Fast: true, Run: naivePipe},
		{Name: "drain", About: "dvsync worker(s) draining the backlog, zero emulator latency", Fast: true,
			Run: func(ctx context.Context, s *System) (Measurement, error) { return dvsyncDrain(ctx, s, s.r.P.Backlog) },
			Goal: func(row Row, t *Table) (string, bool) {
				return fmt.Sprintf("≥ 0.30 × raw (%s)", ratio(row.Rate, t.raw)), t.raw > 0 && row.Rate >= 0.30*t.raw
			}},
		{Name: "realistic-1", About: "realistic model (20 ms a request + 5 ms a record, Dataverse's default limits), 1 application user, sustained",
			Model: Model{Realistic: true, Users: 1}, Run: sustained,
			Goal: func(row Row, _ *Table) (string, bool) {
				return fmt.Sprintf("≥ 90 %% of the ceiling and ~770/s a user (%s/s)", thousands(row.Rate)),
					row.HasCeiling && row.Ceiling >= 0.90 && row.Rate >= 0.9*perUserGoal
			}},
		{Name: "realistic-2", About: "the realistic model with 2 application users: throughput should double",
			Model: Model{Realistic: true, Users: 2}, Run: sustained,
			Goal: func(row Row, t *Table) (string, bool) {
				return fmt.Sprintf("≈ 2 × 1 user (%s)", ratio(row.Rate, t.oneUser)), t.oneUser > 0 && row.Rate >= 1.8*t.oneUser
			}},
		{Name: "latency", About: "publish → row written at half the sustained rate of realistic-1, realistic model",
			Model: Model{Realistic: true, Users: 1}, Run: latency,
			Goal: func(row Row, _ *Table) (string, bool) {
				return fmt.Sprintf("p99 ≤ 1 s (%s)", ms(row.P99)), row.HasLatency && row.P99 <= time.Second
			}},
		{Name: "memory", About: "peak RSS (VmHWM) of a worker draining the large backlog, zero latency", Fast: true,
			Run: func(ctx context.Context, s *System) (Measurement, error) {
				return dvsyncDrain(ctx, s, s.r.P.MemoryBacklog)
			},
			Goal: func(row Row, _ *Table) (string, bool) {
				return fmt.Sprintf("≤ 256 MB (%s)", mb(row.RSS)), row.RSS > 0 && row.RSS <= 256<<20
			}},
	}
}

// rawConsume is the upper bound: JetStream's own consume and ack, nothing done per message, on a
// durable consumer configured as the workers' is.
func rawConsume(ctx context.Context, s *System) (Measurement, error) {
	cons, err := s.backlog(ctx, "bench-raw")
	if err != nil {
		return Measurement{}, err
	}
	cc, err := cons.Consume(func(m jetstream.Msg) { _ = m.Ack() })
	if err != nil {
		return Measurement{}, err
	}
	defer cc.Stop()
	d, err := measureDrain(ctx, cons, 0, nil)
	return drained(d), err
}

func drained(d Drain) Measurement {
	m := Measurement{Events: d.Total, Rate: d.Rate(), Elapsed: d.Elapsed}
	if d.Redeliv > 0 {
		m.Notes = append(m.Notes, fmt.Sprintf("%d redelivered", d.Redeliv))
	}
	return m
}

// naivePipe drains the backlog one message at a time through the emulator.
func naivePipe(ctx context.Context, s *System) (Measurement, error) {
	cons, err := s.backlog(ctx, "bench-naive")
	if err != nil {
		return Measurement{}, err
	}
	pipe := newNaive(ctx, s.r.emu)
	pctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- pipe.run(pctx, cons) }()
	var before Usage
	var tookBefore time.Duration
	d, err := measureDrain(ctx, cons, 0, func() { before, _ = s.usage(ctx); tookBefore = time.Duration(pipe.took.Load()) })
	stop()
	if perr := <-done; err == nil {
		err = perr
	}
	m := drained(d)
	m.Users = 1
	if after, uerr := s.usage(ctx); uerr == nil && after.Known {
		u := after.since(before)
		m.Exec, m.ExecFrom, m.Throttled, m.Throttles = u.Exec, "emulator", u.Throttled, "emulator"
	} else {
		m.Exec, m.ExecFrom = time.Duration(pipe.took.Load())-tookBefore, "client"
		m.Throttled, m.Throttles = pipe.throttled.Load(), "client"
	}
	return m, err
}

// dvsyncDrain: the workers start on a backlog of events customer upserts, their currency coupled.
func dvsyncDrain(ctx context.Context, s *System, events int) (Measurement, error) {
	if err := s.warmUp(ctx); err != nil {
		return Measurement{}, err
	}
	if err := publishBacklog(ctx, s.pubJS, s.name, 0, events, s.r.P.Customers); err != nil {
		return Measurement{}, err
	}
	d, before, err := s.drainWorkers(ctx, 0)
	if err != nil {
		return drained(d), err
	}
	m := s.measured(ctx, d, before)
	if synced := s.lastMetrics.sum("dvsync_events_handled_total", "outcome", "synced"); int(synced) < events {
		m.Notes = append(m.Notes, fmt.Sprintf("only %.0f of %d events synced", synced, events))
	}
	return m, nil
}

// sustained runs the realistic model for the profile's sustained time, a publisher keeping the
// backlog ahead of the drain.
func sustained(ctx context.Context, s *System) (Measurement, error) {
	if err := s.warmUp(ctx); err != nil {
		return Measurement{}, err
	}
	customers := s.r.P.Customers
	if err := publishBacklog(ctx, s.pubJS, s.name, 0, customers, customers); err != nil {
		return Measurement{}, err
	}
	cons, err := s.workerConsumer(ctx)
	if err != nil {
		return Measurement{}, err
	}
	pctx, stop := context.WithCancel(ctx)
	published := make(chan error, 1)
	go func() { published <- topUp(pctx, s.pubJS, cons, s.name, customers, customers) }()
	d, before, err := s.drainWorkers(ctx, s.r.P.Sustained)
	stop()
	if perr := <-published; err == nil && perr != nil && ctx.Err() == nil {
		err = fmt.Errorf("publishing the load: %w", perr)
	}
	if err != nil {
		return drained(d), err
	}
	return s.measured(ctx, d, before), nil
}

// latency publishes at half the sustained rate, one new customer per event, and reads when each
// event's coupling was recorded (the worker records it once the Dataverse row is written).
func latency(ctx context.Context, s *System) (Measurement, error) {
	rate := s.r.sustained / 2
	var notes []string
	if rate <= 0 {
		rate = perUserGoal / 2
		notes = append(notes, "realistic-1 did not run: at half the goal's 770/s")
	}
	if err := s.startWorkers(ctx); err != nil {
		return Measurement{}, err
	}
	if err := s.couple(ctx, currency); err != nil {
		return Measurement{}, err
	}
	n := max(1, int(rate*s.r.P.LatencyRun.Seconds()))
	sent := make(map[string]time.Time, n)
	start := time.Now()
	for i := range n {
		if due := start.Add(time.Duration(float64(i) / rate * float64(time.Second))); time.Until(due) > 0 {
			if err := testbed.Sleep(ctx, time.Until(due)); err != nil {
				return Measurement{}, err
			}
		}
		c := LatencyChange(s.name, i)
		at := time.Now()
		if _, err := testbed.Publish(ctx, s.pubJS, c.Subject, c.MsgID, c.Data, nil); err != nil {
			return Measurement{}, err
		}
		sent[fmt.Sprintf("L%06d", i)] = at
	}
	elapsed := time.Since(start)
	cons, err := s.workerConsumer(ctx)
	if err != nil {
		return Measurement{}, err
	}
	if err := waitDrained(ctx, cons); err != nil {
		return Measurement{}, err
	}
	if err := s.exited(); err != nil {
		return Measurement{}, err
	}
	written, err := s.syncedAt(ctx)
	if err != nil {
		return Measurement{}, err
	}
	var lat []time.Duration
	for key, at := range sent {
		if w, ok := written[key]; ok {
			lat = append(lat, w.Sub(at))
		}
	}
	m := Measurement{Events: n, Rate: float64(n) / elapsed.Seconds(), Elapsed: elapsed, Users: 1, Notes: notes}
	if len(lat) < n {
		m.Notes = append(m.Notes, fmt.Sprintf("only %d of %d events synced", len(lat), n))
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		m.HasLatency, m.P50, m.P99 = true, percentile(lat, 0.50), percentile(lat, 0.99)
	}
	m.Notes = append(m.Notes, fmt.Sprintf("at %.0f/s for %s", rate, s.r.P.LatencyRun))
	// The worker's own view, once it exports it: stream timestamp → outcome durable.
	if samples, err := s.metrics(ctx); err == nil {
		const hist = "dvsync_change_latency_seconds"
		if p50, ok := samples.quantile(hist, 0.50); ok {
			p99, _ := samples.quantile(hist, 0.99)
			m.Notes = append(m.Notes, fmt.Sprintf("the worker's %s: p50 ≤ %s, p99 ≤ %s", hist, ms(p50), ms(p99)))
		}
	}
	if rss, err := s.peakRSS(); err == nil {
		m.RSS = rss
	}
	return m, nil
}

// drainWorkers starts the workers and measures their drain of the workers' consumer from its
// first acknowledgement (for until, or to the end), with the counters at that moment.
func (s *System) drainWorkers(ctx context.Context, until time.Duration) (Drain, snapshot, error) {
	cons, err := s.workerConsumer(ctx)
	if err != nil {
		return Drain{}, snapshot{}, err
	}
	type drainResult struct {
		d   Drain
		err error
	}
	var before snapshot
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	measuredC := make(chan drainResult, 1)
	// Watching from before the workers start, so that their first acknowledgement is seen.
	go func() {
		d, err := measureDrain(mctx, cons, until, func() { before = s.snapshot(ctx) })
		measuredC <- drainResult{d, err}
	}()
	if err := s.startWorkers(ctx); err != nil {
		cancel()
		<-measuredC
		return Drain{}, before, err
	}
	res := <-measuredC
	if res.err == nil {
		res.err = s.exited()
	}
	return res.d, before, res.err
}

// exited is an error naming every process of the run that exited unasked: its measurement
// does not count.
func (s *System) exited() error {
	if exits := s.sup.Exits(); len(exits) > 0 {
		return fmt.Errorf("exited unasked: %s (logs: %s)", strings.Join(exits, ", "), s.dir)
	}
	return nil
}

// waitDrained waits until the consumer has no message left, while it makes progress.
func waitDrained(ctx context.Context, cons jetstream.Consumer) error {
	last, since := -1, time.Now()
	return testbed.WaitFor(ctx, 24*time.Hour, 100*time.Millisecond, func() bool {
		info, err := cons.Info(ctx)
		if err != nil {
			return false
		}
		if n := acked(info); n != last {
			last, since = n, time.Now()
		}
		if time.Since(since) > stallLimit {
			return true // measured with what was synced; the notes say how much
		}
		return info.NumPending == 0 && info.NumAckPending == 0
	})
}

// syncedAt reads when each customer's coupling was last synced.
func (s *System) syncedAt(ctx context.Context) (map[string]time.Time, error) {
	conn, err := pgx.Connect(ctx, s.r.db.URL(s.db))
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, `SELECT source_key, last_synced_at FROM couplings WHERE table_name = 'customer' AND last_synced_at IS NOT NULL`)
	if err != nil {
		return nil, fmt.Errorf("read couplings: %w", err)
	}
	out := map[string]time.Time{}
	for rows.Next() {
		var key string
		var at time.Time
		if err := rows.Scan(&key, &at); err != nil {
			return nil, err
		}
		out[key] = at
	}
	return out, rows.Err()
}

// snapshot is the counters a measured span starts from.
type snapshot struct {
	usage   Usage
	metrics Samples
	err     error
}

func (s *System) snapshot(ctx context.Context) snapshot {
	var sn snapshot
	sn.usage, sn.err = s.usage(ctx)
	if m, err := s.metrics(ctx); err == nil {
		sn.metrics = m
	} else {
		sn.err = errors.Join(sn.err, err)
	}
	return sn
}

// measured turns a drain of the workers into a measurement: the rate, the workers' peak RSS, the
// execution time and 429s in the span (the emulator's counts when it has them, else the workers').
func (s *System) measured(ctx context.Context, d Drain, before snapshot) Measurement {
	m := drained(d)
	m.Users = len(s.apps)
	if rss, err := s.peakRSS(); err == nil {
		m.RSS = rss
	} else {
		m.Notes = append(m.Notes, "no RSS: "+err.Error())
	}
	after := s.snapshot(ctx)
	s.lastMetrics = after.metrics
	if u := after.usage.since(before.usage); u.Known {
		m.Exec, m.ExecFrom, m.Throttled, m.Throttles = u.Exec, "emulator", u.Throttled, "emulator"
		if len(s.apps) > 1 {
			var spread []string
			for _, a := range s.apps {
				spread = append(spread, fmt.Sprint(u.PerUser[a.ClientID]))
			}
			m.Notes = append(m.Notes, "records per user "+strings.Join(spread, "/"))
		}
	} else if after.metrics != nil {
		const took = "dvsync_dataverse_request_duration_seconds_sum"
		m.Exec = time.Duration((after.metrics.sum(took) - before.metrics.sum(took)) * float64(time.Second))
		m.ExecFrom = "client"
		const requests = "dvsync_dataverse_requests_total"
		m.Throttled = int64(after.metrics.sum(requests, "status", "429") - before.metrics.sum(requests, "status", "429"))
		m.Throttles = "client"
	}
	return m
}
