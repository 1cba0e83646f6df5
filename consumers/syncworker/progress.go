package syncworker

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/infra/events"
	"github.com/dvsync/dvsync/infra/storage"
)

// Progress keeps the tables' backlog periods (a first load, a catch-up) in the store, whether or
// not anyone looks: the workers are where the changes handed out and acked are known. Every Every
// each worker reports to the store the changes it holds per table and those it acked since its
// last report (added to the open periods' done). One worker at a time, the one holding the
// store's counting lease, then counts the backlog, per table: the changes waiting after the
// consumer's delivered position, those the workers' fresh reports hold, and for an open period
// at least what its total has not done yet (a resumed table's changes were handed out and nak'd
// while it was paused, so they sit before the delivered position until they come back).
// It opens a period for a table with a backlog that nothing was synced of yet (loading) or
// whose backlog reaches Threshold (catching up), and ends it when the backlog is 0 with nothing
// in any worker's hand, or when the stream was purged or recreated past its start.
type Progress struct {
	Store     BacklogStore
	Stream    StreamPosition
	Tables    []string
	Every     time.Duration
	Threshold uint64
	Log       *slog.Logger
	// Paused is the worker's view of the paused tables: a pause ends their periods (in the store)
	// and their waiting changes are no load.
	Paused func(table string) bool
	// ID names this worker in the store (its report, its lease); a random one when empty.
	ID string

	// counts are the tables' counters, built once from Tables: the lanes' hooks touch only
	// their table's atomics, no lock.
	once   sync.Once
	counts map[string]*tableCounts
	// ticks and synced are the counting's state, used by Tick alone.
	ticks int
	// synced remembers the tables found synced: a table that synced once never loads again.
	synced map[string]bool
}

// tableCounts are one table's changes this worker holds and those it acked since its last report.
type tableCounts struct {
	inHand atomic.Int64
	acked  atomic.Uint64
}

// BacklogStore is the part of the store Progress uses.
type BacklogStore interface {
	StartBacklog(ctx context.Context, table string, kind storage.BacklogKind, total, startSeq uint64) (bool, error)
	TickBacklog(ctx context.Context, table string, done, left uint64) error
	EndBacklog(ctx context.Context, table string) (bool, error)
	BacklogPeriods(ctx context.Context) ([]storage.BacklogPeriod, error)
	LeaseBacklogCount(ctx context.Context, holder string, ttl time.Duration) (bool, error)
	ReleaseBacklogCount(ctx context.Context, holder string) error
	ReportBacklog(ctx context.Context, worker string, inHand, acked map[string]uint64) error
	InHand(ctx context.Context, freshFor time.Duration) (map[string]uint64, error)
	// Synced reports whether any record of the table was synced (a table that has none loads).
	Synced(ctx context.Context, table string) (bool, error)
}

// StreamPosition reads the workers' consumer in the changes stream (natsjs.WorkerStream).
type StreamPosition interface {
	// Position is the consumer's delivered sequence and the stream's first one.
	Position(ctx context.Context) (delivered, firstSeq uint64, err error)
	// Waiting counts the table's changes after delivered; FromAckFloor those after the ack floor.
	Waiting(ctx context.Context, table string, delivered uint64) (uint64, error)
	FromAckFloor(ctx context.Context, table string) (uint64, error)
}

func tableOfSubject(subject string) string { return strings.TrimPrefix(subject, events.SubjectPrefix) }

func (p *Progress) build() {
	p.once.Do(func() {
		p.counts = make(map[string]*tableCounts, len(p.Tables))
		for _, t := range p.Tables {
			p.counts[t] = &tableCounts{}
		}
		if p.ID == "" {
			p.ID = uuid.NewString()
		}
	})
}

// table is the counters of the subject's table (nil for a table not mapped: not counted).
func (p *Progress) table(subject string) *tableCounts {
	if p == nil {
		return nil
	}
	p.build()
	return p.counts[tableOfSubject(subject)]
}

// held and released count the changes this worker holds; ackedOne those it acked.
func (p *Progress) held(subject string) {
	if c := p.table(subject); c != nil {
		c.inHand.Add(1)
	}
}

func (p *Progress) released(subject string) {
	if c := p.table(subject); c != nil {
		c.inHand.Add(-1)
	}
}

func (p *Progress) ackedOne(subject string) {
	if c := p.table(subject); c != nil {
		c.acked.Add(1)
	}
}

// take returns what is in hand and takes the acks since the last take.
func (p *Progress) take() (inHand, acked map[string]uint64) {
	p.build()
	inHand, acked = map[string]uint64{}, map[string]uint64{}
	for t, c := range p.counts {
		if n := c.inHand.Load(); n > 0 {
			inHand[t] = uint64(n)
		}
		if n := c.acked.Swap(0); n > 0 {
			acked[t] = n
		}
	}
	return inHand, acked
}

// giveBack returns acks a report could not store, for the next one.
func (p *Progress) giveBack(acked map[string]uint64) {
	for t, n := range acked {
		p.counts[t].acked.Add(n)
	}
}

func (p *Progress) isSynced(ctx context.Context, table string) (bool, error) {
	if p.synced[table] {
		return true, nil
	}
	synced, err := p.Store.Synced(ctx, table)
	if synced {
		if p.synced == nil {
			p.synced = map[string]bool{}
		}
		p.synced[table] = true
	}
	return synced, err
}

// defaultEvery is the counting interval when Every is not set.
const defaultEvery = 2 * time.Second

func (p *Progress) every() time.Duration {
	if p.Every <= 0 {
		return defaultEvery
	}
	return p.Every
}

// leaseFor is how long the counting lease lasts, and a report counts: a few intervals, so that
// a missed tick loses neither, and a worker gone is replaced (its report forgotten) soon.
func (p *Progress) leaseFor() time.Duration { return max(3*p.every(), 5*time.Second) }

// Run counts every Every until ctx ends, then reports the acks not reported yet and gives the
// counting lease up, so that another worker counts at once. The worker ends ctx once its lanes
// are done: nothing is in hand then.
func (p *Progress) Run(ctx context.Context) {
	p.build()
	t := time.NewTicker(p.every())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			inHand, acked := p.take()
			err := p.report(fctx, inHand, acked)
			if rerr := p.Store.ReleaseBacklogCount(fctx, p.ID); rerr != nil {
				err = errors.Join(err, rerr)
			}
			if err != nil {
				p.Log.Debug("reporting the last acks", "err", err)
			}
			return
		case <-t.C:
		}
		tctx, cancel := context.WithTimeout(ctx, max(p.every(), 5*time.Second))
		if err := p.Tick(tctx); err != nil && ctx.Err() == nil {
			p.Log.Warn("counting the tables' backlog", "err", err)
		}
		cancel()
	}
}

// report stores what this worker holds and acked (nil: the acks wait in acked for the count's
// ticks); acks a failed report could not store are kept for the next.
func (p *Progress) report(ctx context.Context, inHand, acked map[string]uint64) error {
	if err := p.Store.ReportBacklog(ctx, p.ID, inHand, acked); err != nil {
		p.giveBack(acked)
		return err
	}
	return nil
}

// everyTable is how often (in ticks) the tables without a period or changes in hand are counted
// too: the others are counted every tick.
const everyTable = 5

// Tick reports what this worker holds and acked, and counts once when it holds the counting
// lease. The counter's own acks go with its counts (TickBacklog), so that a period's done and
// left move together as far as this worker knows them.
func (p *Progress) Tick(ctx context.Context) (err error) {
	p.build() // p.ID first
	counting, err := p.Store.LeaseBacklogCount(ctx, p.ID, p.leaseFor())
	if err != nil {
		return err
	}
	mine, acked := p.take()
	if !counting {
		return p.report(ctx, mine, acked)
	}
	if err := p.report(ctx, mine, nil); err != nil {
		p.giveBack(acked)
		return err
	}
	defer func() {
		if err != nil {
			p.giveBack(acked) // those not counted yet
		}
	}()
	p.ticks++
	delivered, firstSeq, err := p.Stream.Position(ctx)
	if err != nil {
		return err
	}
	periods, err := p.Store.BacklogPeriods(ctx)
	if err != nil {
		return err
	}
	inHand, err := p.Store.InHand(ctx, p.leaseFor())
	if err != nil {
		return err
	}
	open := map[string]storage.BacklogPeriod{}
	for _, pr := range periods {
		open[pr.Table] = pr
	}
	all := p.ticks%everyTable == 1
	for _, table := range p.Tables {
		if p.Paused != nil && p.Paused(table) {
			continue
		}
		pr, isOpen := open[table]
		if isOpen && (delivered < pr.StartSeq || firstSeq > pr.StartSeq+1) {
			// The stream was recreated (its sequences started again) or purged past the period's
			// first change: what it counted is gone.
			if _, err := p.Store.EndBacklog(ctx, table); err != nil {
				return err
			}
			isOpen = false
		}
		if !isOpen && !all && inHand[table] == 0 {
			continue
		}
		waiting, err := p.Stream.Waiting(ctx, table, delivered)
		if err != nil {
			return err
		}
		left := waiting + inHand[table]
		if isOpen {
			if done := pr.Done + acked[table]; done < pr.Total {
				// Nak'd changes of a resumed table come back from before the delivered position:
				// the total not done yet, capped by what is after the ack floor, still waits.
				floor, err := p.Stream.FromAckFloor(ctx, table)
				if err != nil {
					return err
				}
				left = max(left, min(floor, pr.Total-done))
			}
			if err := p.Store.TickBacklog(ctx, table, acked[table], left); err != nil {
				return err
			}
			delete(acked, table)
			if left == 0 {
				if _, err := p.Store.EndBacklog(ctx, table); err != nil {
					return err
				}
			}
			continue
		}
		if left == 0 {
			continue
		}
		synced, err := p.isSynced(ctx, table)
		if err != nil {
			return err
		}
		kind := storage.BacklogCatchingUp
		switch {
		case !synced:
			kind = storage.BacklogLoading
		case left < max(p.Threshold, 1):
			continue // a small backlog of a table that runs: no progress to show
		}
		if _, err := p.Store.StartBacklog(ctx, table, kind, left, delivered); err != nil {
			return err
		}
	}
	return nil
}
