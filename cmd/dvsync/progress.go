package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/singleflight"

	"github.com/dvsync/dvsync/consumers/replay"
	"github.com/dvsync/dvsync/consumers/syncworker"
	"github.com/dvsync/dvsync/infra/httpapi"
	"github.com/dvsync/dvsync/infra/natsjs"
	"github.com/dvsync/dvsync/infra/storage"
)

// progress is the worker's keeper of the tables' backlog periods (syncworker.Progress).
func (s *stack) progress(pauses *syncworker.Pauses) *syncworker.Progress {
	return &syncworker.Progress{Store: backlogStore{s.store}, Stream: &natsjs.WorkerStream{JS: s.js}, Tables: s.mappings.Tables(),
		Every: s.cfg.Worker.ProgressEvery, Threshold: s.cfg.Worker.BacklogThreshold, Paused: pauses.Paused,
		Log: s.log.With("component", "progress")}
}

// backlogStore adds Synced to the store: a table with a coupling has synced something.
type backlogStore struct{ storage.Store }

func (b backlogStore) Synced(ctx context.Context, table string) (bool, error) {
	cs, err := b.ListCouplings(ctx, storage.CouplingFilter{Table: table, Limit: 1})
	return len(cs) > 0, err
}

// streamViewTTL is how long one reading of JetStream serves every status view: many people
// watching the page cost NATS one reading per TTL, not one per poll.
const streamViewTTL = 2500 * time.Millisecond

// streamView is a cached reading of JetStream for the status views: what waits per table (the
// paused tables' backlog after the ack floor, since their changes were handed out and nak'd; the
// others' after the delivered position) and the consumer's lag.
type streamView struct {
	js     jetstream.JetStream
	tables []string
	ttl    time.Duration

	group   singleflight.Group
	mu      sync.Mutex
	entries map[string]viewEntry
}

type viewEntry struct {
	at    time.Time
	value any
}

// get answers key's reading from the cache while it is younger than the TTL; otherwise one
// caller reads it for all who ask meanwhile.
func (v *streamView) get(ctx context.Context, key string, read func(ctx context.Context) (any, error)) (any, error) {
	if value, ok := v.cached(key); ok {
		return value, nil
	}
	out, err, _ := v.group.Do(key, func() (any, error) {
		// Again: a reading may have ended between the look above and this call.
		if value, ok := v.cached(key); ok {
			return value, nil
		}
		// Its own deadline: the first viewer's request ending must not fail the others'.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		value, err := read(rctx)
		if err != nil {
			return nil, err
		}
		v.mu.Lock()
		if v.entries == nil {
			v.entries = map[string]viewEntry{}
		}
		v.entries[key] = viewEntry{at: time.Now(), value: value}
		v.mu.Unlock()
		return value, nil
	})
	return out, err
}

func (v *streamView) cached(key string) (any, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	e, ok := v.entries[key]
	return e.value, ok && time.Since(e.at) < v.ttl
}

func (v *streamView) waiting(ctx context.Context, paused map[string]bool) (map[string]uint64, error) {
	key := "waiting"
	for _, table := range v.tables {
		if paused[table] {
			key += " " + table
		}
	}
	out, err := v.get(ctx, key, func(ctx context.Context) (any, error) {
		pos, err := natsjs.WorkerPosition(ctx, v.js)
		if err != nil {
			return nil, err
		}
		m := map[string]uint64{}
		for _, table := range v.tables {
			var n uint64
			if paused[table] {
				n, err = pos.Backlog(ctx, table)
			} else {
				n, err = pos.Waiting(ctx, table)
			}
			if err != nil {
				return nil, err
			}
			m[table] = n
		}
		return m, nil
	})
	if err != nil {
		return nil, err
	}
	return out.(map[string]uint64), nil
}

// lag is the changes the workers have not acked yet, for the status's consumer_lag.
func (v *streamView) lag(ctx context.Context) (uint64, error) {
	out, err := v.get(ctx, "lag", func(ctx context.Context) (any, error) {
		pos, err := natsjs.WorkerPosition(ctx, v.js)
		return pos.Lag, err
	})
	if err != nil {
		return 0, err
	}
	return out.(uint64), nil
}

// periodProgress is a backlog period's progress, all from the store: the same in every replica.
func periodProgress(p storage.BacklogPeriod) httpapi.Progress {
	pr := httpapi.Progress{Done: p.Done, Total: max(p.Total, p.Done+p.Left)}
	if el := p.UpdatedAt.Sub(p.StartedAt).Seconds(); el > 0 && p.Done > 0 {
		pr.Rate = float64(p.Done) / el
		s := float64(p.Left) / pr.Rate
		pr.LeftSeconds = &s
	}
	return pr
}

// coupleRunBeat is how often a coupling run stores its counts and its heartbeat.
const coupleRunBeat = 2 * time.Second

// recordedRuns are coupling runs recorded in the store as they go, one unfinished per table.
type recordedRuns struct {
	couplingRunner
	store storage.ProgressStore
	beat  time.Duration
	// base is the context of the runs started in the background; wg waits for them.
	base context.Context
	wg   *sync.WaitGroup
}

func (r recordedRuns) CoupleTable(ctx context.Context, table, actor string, wait time.Duration) (replay.CouplingRun, error) {
	rec, err := r.store.StartCouplingRun(ctx, table, actor)
	if err != nil {
		return replay.CouplingRun{Table: table}, err
	}
	return r.run(ctx, rec, wait)
}

// StartCouplingRun starts a run that goes on after the request: the page's button returns at once.
func (r recordedRuns) StartCouplingRun(ctx context.Context, table, actor string, wait time.Duration) (storage.CouplingRunRecord, error) {
	rec, err := r.store.StartCouplingRun(ctx, table, actor)
	if err != nil {
		return rec, err
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		_, _ = r.run(r.base, rec, wait) // its outcome is stored; the log has its failure
	}()
	return rec, nil
}

func (r recordedRuns) CouplingRuns(ctx context.Context, table string, limit int) ([]storage.CouplingRunRecord, error) {
	return r.store.CouplingRuns(ctx, table, limit)
}

// run runs rec, beating on its own ticker with the counts the run reports as it goes.
func (r recordedRuns) run(ctx context.Context, rec storage.CouplingRunRecord, wait time.Duration) (replay.CouplingRun, error) {
	return r.watched(ctx, rec, func(ctx context.Context, watch func(replay.CouplingRun, bool)) (replay.CouplingRun, error) {
		return r.replayer.CoupleTableWatched(ctx, r.ledger, rec.Table, rec.By, wait, watch)
	})
}

// runOrphanedAfter is how long a run goes on without a stored beat: short of StaleRunAfter, so
// that it has stopped before another start may find it stale and run beside it.
const runOrphanedAfter = storage.StaleRunAfter * 3 / 4

// errRunOrphaned stops a run whose beats could not be stored for runOrphanedAfter.
var errRunOrphaned = errors.New("its heartbeat could not be stored: another run of the table may start")

// watched runs do, beating rec. A run stops when its beat finds it lost (another start marked it
// interrupted) or when no beat was stored for runOrphanedAfter: one run of a table at a time.
func (r recordedRuns) watched(ctx context.Context, rec storage.CouplingRunRecord,
	do func(context.Context, func(replay.CouplingRun, bool)) (replay.CouplingRun, error)) (replay.CouplingRun, error) {
	var mu sync.Mutex
	var counts storage.RunCounts
	current := func() storage.RunCounts { mu.Lock(); defer mu.Unlock(); return counts }
	runCtx, stopRun := context.WithCancelCause(ctx)
	defer stopRun(nil)
	beatCtx, stopBeat := context.WithCancel(context.WithoutCancel(ctx))
	var beats sync.WaitGroup
	beats.Go(func() {
		t := time.NewTicker(r.beat)
		defer t.Stop()
		stored := time.Now()
		for {
			select {
			case <-beatCtx.Done():
				return
			case <-t.C:
			}
			// Its own deadline: a beat that hangs must not hold the next ones back.
			bctx, cancel := context.WithTimeout(beatCtx, max(r.beat, 5*time.Second))
			err := r.store.BeatCouplingRun(bctx, rec.ID, current())
			cancel()
			switch {
			case err == nil:
				stored = time.Now()
			case errors.Is(err, storage.ErrRunLost):
				stopRun(err)
				return
			case time.Since(stored) > runOrphanedAfter:
				stopRun(fmt.Errorf("%w: %w", errRunOrphaned, err))
				return
			} // else a missed beat: retried at the next
		}
	})
	run, err := do(runCtx, func(run replay.CouplingRun, listed bool) {
		mu.Lock()
		defer mu.Unlock()
		counts = runCounts(run, listed)
	})
	stopBeat()
	beats.Wait()
	if cause := context.Cause(runCtx); cause != nil && ctx.Err() == nil {
		err = fmt.Errorf("coupling run of %s stopped: %w", rec.Table, cause)
	}
	// A lost run's end changes nothing: the store finishes only an unfinished run.
	failure := ""
	if err != nil {
		failure = err.Error()
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if ferr := r.store.FinishCouplingRun(fctx, rec.ID, runCounts(run, true), failure); ferr != nil {
		err = errors.Join(err, fmt.Errorf("recording the coupling run's end: %w", ferr))
	}
	return run, err
}

func runCounts(run replay.CouplingRun, listed bool) storage.RunCounts {
	c := storage.RunCounts{Coupled: run.Coupled, Created: run.Created, Failed: run.Failed, Skipped: run.Skipped}
	c.Done = c.Coupled + c.Created + c.Failed + c.Skipped
	if listed {
		n := max(len(run.Results), run.Records)
		c.Total = &n
	}
	return c
}
