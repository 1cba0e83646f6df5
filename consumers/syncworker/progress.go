package syncworker

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/dvsync/dvsync/infra/events"
	"github.com/dvsync/dvsync/infra/storage"
)

// Progress keeps the tables' backlog periods (a first load, a catch-up) in the store, whether or
// not anyone looks: the worker is where the changes handed out and acked are known. Every Every it
// counts, per table, the changes acked since the last count (done) and the backlog: the changes
// waiting after the consumer's delivered position, those this worker holds, and for an open
// period at least what its total has not done yet (a resumed table's changes were handed out and
// nak'd while it was paused, so they sit before the delivered position until they come back).
// It opens a period for a table with a backlog that nothing was synced of yet (loading) or
// whose backlog reaches Threshold (catching up), and ends it when the backlog is 0 with nothing
// in hand, or when the stream was purged or recreated past its start.
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

	mu     sync.Mutex
	inHand map[string]int
	acked  map[string]uint64
	ticks  int
	// synced remembers the tables found synced: a table that synced once never loads again.
	synced map[string]bool
}

// BacklogStore is the part of the store Progress uses.
type BacklogStore interface {
	StartBacklog(ctx context.Context, table string, kind storage.BacklogKind, total, startSeq uint64) (bool, error)
	TickBacklog(ctx context.Context, table string, done, left uint64) error
	EndBacklog(ctx context.Context, table string) (bool, error)
	BacklogPeriods(ctx context.Context) ([]storage.BacklogPeriod, error)
	// Synced reports whether any record of the table was synced (a table that has none loads).
	Synced(ctx context.Context, table string) (bool, error)
}

// StreamPosition reads the workers' consumer in the changes stream (natsjs).
type StreamPosition interface {
	// Position is the consumer's delivered sequence and the stream's first one.
	Position(ctx context.Context) (delivered, firstSeq uint64, err error)
	// Waiting counts the table's changes after delivered; FromAckFloor those after the ack floor.
	Waiting(ctx context.Context, table string, delivered uint64) (uint64, error)
	FromAckFloor(ctx context.Context, table string) (uint64, error)
}

func tableOfSubject(subject string) string { return strings.TrimPrefix(subject, events.SubjectPrefix) }

// held and released count the changes this worker holds; acked those it finished.
func (p *Progress) held(subject string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inHand == nil {
		p.inHand, p.acked = map[string]int{}, map[string]uint64{}
	}
	p.inHand[tableOfSubject(subject)]++
}

func (p *Progress) released(subject string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	t := tableOfSubject(subject)
	if p.inHand[t]--; p.inHand[t] <= 0 {
		delete(p.inHand, t)
	}
}

func (p *Progress) ackedOne(subject string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.acked == nil {
		p.inHand, p.acked = map[string]int{}, map[string]uint64{}
	}
	p.acked[tableOfSubject(subject)]++
}

// take returns what is in hand and the acks since the last take.
func (p *Progress) take() (map[string]int, map[string]uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	inHand := make(map[string]int, len(p.inHand))
	for t, n := range p.inHand {
		inHand[t] = n
	}
	acked := p.acked
	p.acked = map[string]uint64{}
	if p.inHand == nil {
		p.inHand = map[string]int{}
	}
	p.ticks++
	return inHand, acked
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

// Run counts every Every until ctx ends.
func (p *Progress) Run(ctx context.Context) {
	t := time.NewTicker(p.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		tctx, cancel := context.WithTimeout(ctx, max(p.Every, 5*time.Second))
		if err := p.Tick(tctx); err != nil && ctx.Err() == nil {
			p.Log.Warn("counting the tables' backlog", "err", err)
		}
		cancel()
	}
}

// everyTable is how often (in ticks) the tables without a period or activity are counted too:
// the others are counted every tick.
const everyTable = 5

// Tick counts once.
func (p *Progress) Tick(ctx context.Context) error {
	inHand, acked := p.take()
	delivered, firstSeq, err := p.Stream.Position(ctx)
	if err != nil {
		return err
	}
	periods, err := p.Store.BacklogPeriods(ctx)
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
		if !isOpen && !all && inHand[table] == 0 && acked[table] == 0 {
			continue
		}
		waiting, err := p.Stream.Waiting(ctx, table, delivered)
		if err != nil {
			return err
		}
		left := waiting + uint64(inHand[table])
		if isOpen {
			done := pr.Done + acked[table]
			if done < pr.Total {
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
