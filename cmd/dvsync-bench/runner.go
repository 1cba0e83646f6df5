package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/dvsync/dvsync/internal/testbed"
)

// Runner runs scenarios on one PostgreSQL server and one emulator process.
type Runner struct {
	P        Profile
	Repeat   int
	Keep     bool
	Out      io.Writer
	Postgres string // "private", or the URL of a server to create databases on
	Knobs    Knobs

	tmp  string
	bins testbed.Binaries
	sup  *testbed.Supervisor
	emu  *testbed.Emulator
	db   Databases
	runs int
	// sustained is the rate of the realistic run with one user, which the latency scenario
	// publishes at half of (0 until it ran).
	sustained float64
}

// Run builds the binaries, starts PostgreSQL (unless given one) and the emulator, runs each
// scenario and removes what it started.
func (r *Runner) Run(ctx context.Context, scenarios []Scenario) ([]*Result, error) {
	var err error
	if r.tmp, err = os.MkdirTemp("", "dvsync-bench-"); err != nil {
		return nil, err
	}
	fmt.Fprintf(r.Out, "dvsync-bench: profile %s, working in %s\n", r.P.Name, r.tmp)
	if r.bins, err = testbed.Build(ctx, filepath.Join(r.tmp, "bin")); err != nil {
		return nil, err
	}
	r.sup = &testbed.Supervisor{}
	defer r.sup.StopAll(5 * time.Second)
	if r.Postgres == "private" {
		pg, err := testbed.CreatePG(ctx, "dvsync_bench")
		if err != nil {
			return nil, fmt.Errorf("%w (or give -postgres the URL of a server)", err)
		}
		defer func() {
			cleanup := context.WithoutCancel(ctx)
			if r.Keep {
				_ = pg.Stop(cleanup)
				fmt.Fprintf(r.Out, "PostgreSQL cluster kept (stopped): pg_dropcluster %s %s\n", pg.Version, pg.Name)
				return
			}
			if err := pg.Drop(cleanup); err != nil {
				fmt.Fprintf(r.Out, "dvsync-bench: %v\n", err)
			}
		}()
		r.db = Databases{admin: pg.URL("postgres")}
		fmt.Fprintf(r.Out, "PostgreSQL %s cluster %s on 127.0.0.1:%d\n", pg.Version, pg.Name, pg.Port)
	} else {
		r.db = Databases{admin: r.Postgres}
	}
	if r.emu, err = testbed.StartEmulator(ctx, r.sup, r.bins.Dvsync, filepath.Join(r.tmp, "emulator.log")); err != nil {
		return nil, err
	}
	var results []*Result
	for _, sc := range scenarios {
		if ctx.Err() != nil {
			break
		}
		res := &Result{Scenario: sc}
		repeats := 1
		if sc.Fast {
			repeats = r.Repeat
		}
		fmt.Fprintf(r.Out, "\n== %s: %s\n", sc.Name, sc.About)
		for i := range repeats {
			if ctx.Err() != nil {
				break
			}
			started := time.Now()
			m, err := r.runOnce(ctx, sc)
			switch {
			case errors.Is(err, errNoApps):
				res.NA = err.Error()
			case err != nil:
				res.Err = err
			default:
				res.Runs = append(res.Runs, m)
			}
			fmt.Fprintf(r.Out, "   run %d/%d in %s: %s\n", i+1, repeats, time.Since(started).Round(time.Second), m.summary(err))
			if err != nil {
				break
			}
		}
		if sc.Name == "realistic-1" && len(res.Runs) > 0 {
			r.sustained = res.median(func(m Measurement) float64 { return m.Rate })
		}
		results = append(results, res)
	}
	return results, nil
}

// runOnce runs a scenario from a clean system.
func (r *Runner) runOnce(ctx context.Context, sc Scenario) (Measurement, error) {
	s, err := r.up(ctx, sc.Name, sc.Model)
	defer s.down(context.WithoutCancel(ctx))
	if err != nil {
		return Measurement{}, err
	}
	return sc.Run(ctx, s)
}

// Drain is how a consumer worked through its messages.
type Drain struct {
	Done    int           // messages acknowledged in the measured span
	Total   int           // messages acknowledged since the watch began
	Elapsed time.Duration // from the first acknowledgement seen to the end
	First   time.Time     // when the first acknowledgement was seen
	Redeliv int           // messages delivered more than once
}

// Rate is messages acknowledged per second.
func (d Drain) Rate() float64 {
	if d.Elapsed <= 0 {
		return 0
	}
	return float64(d.Done) / d.Elapsed.Seconds()
}

// drainPoll is how often a drain reads its consumer: often enough that a drain of a second is
// measured to a few per cent.
const drainPoll = 10 * time.Millisecond

// stallLimit: a drain whose consumer acknowledges nothing for this long has failed (longer than
// the consumer's AckWait, so a redelivery would have shown).
const stallLimit = 90 * time.Second

// acked is how many of the stream's messages the consumer has had acknowledged: every message of
// the changes stream matches the consumer, so those up to the last delivered one less those
// still pending an ack.
func acked(info *jetstream.ConsumerInfo) int {
	return int(info.Delivered.Stream) - info.NumAckPending
}

// measureDrain watches cons until it has no message left (until is zero), or until the time
// until (a sustained run), and measures from its first acknowledgement. onFirst runs once, when
// the first acknowledgement is seen.
func measureDrain(ctx context.Context, cons jetstream.Consumer, until time.Duration, onFirst func()) (Drain, error) {
	var (
		d                  Drain
		base, start, last  = -1, 0, 0
		prev, lastProgress = time.Now(), time.Now()
	)
	for {
		info, err := cons.Info(ctx)
		now := time.Now()
		if err != nil {
			if ctx.Err() != nil {
				return d, ctx.Err()
			}
			return d, fmt.Errorf("reading consumer %s: %w", cons.CachedInfo().Name, err)
		}
		n := acked(info)
		drained := info.NumPending == 0 && info.NumAckPending == 0
		if base < 0 {
			base, last = n, n
		}
		if n != last {
			last, lastProgress = n, now
		}
		d.Redeliv = int(info.NumRedelivered)
		d.Total = n - base
		switch {
		case d.First.IsZero() && n > base && drained && until == 0:
			// All of it between two readings: measured from the reading before.
			d.First, d.Done, d.Elapsed = prev, n-base, now.Sub(prev)
			if onFirst != nil {
				onFirst()
			}
			return d, nil
		case d.First.IsZero() && n > base:
			d.First, start = now, n
			if onFirst != nil {
				onFirst()
			}
		case !d.First.IsZero():
			d.Done, d.Elapsed = n-start, now.Sub(d.First)
			if (until > 0 && d.Elapsed >= until) || (until == 0 && drained) {
				return d, nil
			}
		}
		// A sustained run may be throttled for minutes, which is what it measures.
		if (until == 0 || d.First.IsZero()) && now.Sub(lastProgress) > stallLimit {
			return d, fmt.Errorf("consumer %s acknowledged nothing for %s (%d pending, %d waiting for an ack)",
				info.Name, stallLimit, info.NumPending, info.NumAckPending)
		}
		prev = now
		if err := testbed.Sleep(ctx, drainPoll); err != nil {
			return d, err
		}
	}
}
