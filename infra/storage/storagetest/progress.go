package storagetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/infra/storage"
)

// A table has at most one open backlog period; ticks add to it, and it ends by EndBacklog or by a
// pause, after which a new one may open.
func testBacklogPeriodsOpenCountAndEnd(t *testing.T, h Harness) {
	s := h.Open(t, 0)
	other := h.Open(t, 0) // a second replica reads what the first wrote
	ctx := context.Background()
	table := "b" + uuid.NewString()[:8]
	period := func(st storage.Store) (storage.BacklogPeriod, bool) {
		t.Helper()
		all, err := st.BacklogPeriods(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range all {
			if p.Table == table {
				return p, true
			}
		}
		return storage.BacklogPeriod{}, false
	}
	if err := s.TickBacklog(ctx, table, 5, 5); err != nil {
		t.Fatalf("a tick without a period: %v", err)
	}
	if err := s.ReportBacklog(ctx, "w-"+table, nil, map[string]uint64{table: 5}); err != nil {
		t.Fatalf("a report of acks without a period: %v", err)
	}
	if _, ok := period(s); ok {
		t.Fatal("a tick opened a period")
	}
	if opened, err := s.StartBacklog(ctx, table, storage.BacklogLoading, 120, 7); err != nil || !opened {
		t.Fatalf("start = %v, %v", opened, err)
	}
	if opened, err := other.StartBacklog(ctx, table, storage.BacklogCatchingUp, 999, 9); err != nil || opened {
		t.Fatalf("a second start while one is open = %v, %v", opened, err)
	}
	// Every worker's acks add up, the counter's with its ticks, the others' with their reports.
	if err := s.TickBacklog(ctx, table, 20, 100); err != nil {
		t.Fatal(err)
	}
	if err := other.ReportBacklog(ctx, "b-"+table, nil, map[string]uint64{table: 6, table + "x": 3}); err != nil {
		t.Fatal(err)
	}
	if err := other.TickBacklog(ctx, table, 4, 90); err != nil {
		t.Fatal(err)
	}
	p, ok := period(other)
	if !ok || p.Kind != storage.BacklogLoading || p.Total != 120 || p.Done != 30 || p.Left != 90 || p.StartSeq != 7 {
		t.Fatalf("period = %+v, %v", p, ok)
	}
	if p.StartedAt.IsZero() || p.UpdatedAt.Before(p.StartedAt) {
		t.Fatalf("period times = %v .. %v", p.StartedAt, p.UpdatedAt)
	}
	if ended, err := s.EndBacklog(ctx, table); err != nil || !ended {
		t.Fatalf("end = %v, %v", ended, err)
	}
	if ended, err := s.EndBacklog(ctx, table); err != nil || ended {
		t.Fatalf("a second end = %v, %v", ended, err)
	}
	if _, ok := period(s); ok {
		t.Fatal("an ended period is still open")
	}
	// A new period after the end; a pause ends it.
	if opened, err := s.StartBacklog(ctx, table, storage.BacklogCatchingUp, 300, 50); err != nil || !opened {
		t.Fatalf("start after the end = %v, %v", opened, err)
	}
	if p, ok := period(s); !ok || p.Done != 0 || p.Total != 300 || p.Kind != storage.BacklogCatchingUp {
		t.Fatalf("new period = %+v, %v", p, ok)
	}
	if _, err := s.PauseTable(ctx, table, "ada"); err != nil {
		t.Fatal(err)
	}
	if _, ok := period(s); ok {
		t.Fatal("a pause left the backlog period open")
	}
}

// One unfinished coupling run per table: a second start is refused while the first beats, the
// counts go in as it beats, a finished run lets another start, and a run whose heartbeat is stale
// is interrupted by the next start.
func testCouplingRunsOnePerTableWithHeartbeats(t *testing.T, h Harness) {
	s := h.Open(t, 0)
	ctx := context.Background()
	table := "r" + uuid.NewString()[:8]
	run, err := s.StartCouplingRun(ctx, table, "ada")
	if err != nil || run.ID == 0 || run.State != storage.RunRunning || run.Total != nil || run.By != "ada" {
		t.Fatalf("start = %+v, %v", run, err)
	}
	if _, err := h.Open(t, 0).StartCouplingRun(ctx, table, "bob"); !errors.Is(err, storage.ErrRunInProgress) {
		t.Fatalf("a second start = %v, want ErrRunInProgress", err)
	}
	if other, err := s.StartCouplingRun(ctx, table+"x", "bob"); err != nil || other.ID == run.ID {
		t.Fatalf("another table's run = %+v, %v", other, err)
	}
	total := 10
	if err := s.BeatCouplingRun(ctx, run.ID, storage.RunCounts{Total: &total, Done: 4, Coupled: 2, Created: 1, Failed: 1}); err != nil {
		t.Fatal(err)
	}
	runs, err := s.CouplingRuns(ctx, table, 10)
	if err != nil || len(runs) != 1 {
		t.Fatalf("runs = %+v, %v", runs, err)
	}
	if r := runs[0]; r.Total == nil || *r.Total != 10 || r.Done != 4 || r.Coupled != 2 || r.Created != 1 || r.Failed != 1 ||
		r.State != storage.RunRunning || r.HeartbeatAt.Before(r.StartedAt) {
		t.Fatalf("beaten run = %+v", r)
	}
	if err := s.FinishCouplingRun(ctx, run.ID, storage.RunCounts{Total: &total, Done: 10, Coupled: 6, Created: 3, Failed: 1}, ""); err != nil {
		t.Fatal(err)
	}
	second, err := s.StartCouplingRun(ctx, table, "bob")
	if err != nil {
		t.Fatalf("a start after the first finished: %v", err)
	}
	runs, _ = s.CouplingRuns(ctx, table, 10)
	if len(runs) != 2 || runs[0].ID != second.ID || runs[1].State != storage.RunFinished || runs[1].FinishedAt == nil || runs[1].Done != 10 {
		t.Fatalf("runs = %+v", runs)
	}
	if err := s.FinishCouplingRun(ctx, second.ID, storage.RunCounts{}, "the ledger could not be read"); err != nil {
		t.Fatal(err)
	}
	if runs, _ = s.CouplingRuns(ctx, table, 1); len(runs) != 1 || runs[0].State != storage.RunFailed {
		t.Fatalf("failed run = %+v", runs)
	}
	if err := s.BeatCouplingRun(ctx, second.ID, storage.RunCounts{Done: 1}); !errors.Is(err, storage.ErrRunLost) {
		t.Fatalf("the beat of a finished run = %v, want ErrRunLost", err)
	}
	if h.AgeCouplingRuns == nil {
		return
	}
	third, err := s.StartCouplingRun(ctx, table, "cy")
	if err != nil {
		t.Fatal(err)
	}
	h.AgeCouplingRuns(t, table, 2*storage.StaleRunAfter)
	if runs, _ = s.CouplingRuns(ctx, table, 1); len(runs) != 1 || runs[0].ID != third.ID || runs[0].State != storage.RunInterrupted {
		t.Fatalf("stale run = %+v", runs)
	}
	fourth, err := s.StartCouplingRun(ctx, table, "dee")
	if err != nil {
		t.Fatalf("a start after a stale run: %v", err)
	}
	// The stale run's process was alive after all (a long database outage): its next beat says it
	// lost the run, so that it stops instead of running beside the new one.
	if err := s.BeatCouplingRun(ctx, third.ID, storage.RunCounts{Done: 1}); !errors.Is(err, storage.ErrRunLost) {
		t.Fatalf("the beat of a run another start interrupted = %v, want ErrRunLost", err)
	}
	runs, _ = s.CouplingRuns(ctx, table, 2)
	if len(runs) != 2 || runs[0].ID != fourth.ID || runs[0].State != storage.RunRunning || runs[1].State != storage.RunInterrupted || runs[1].FinishedAt == nil {
		t.Fatalf("runs after the stale one = %+v", runs)
	}
	if all, err := s.CouplingRuns(ctx, "", 500); err != nil || len(all) < 5 {
		t.Fatalf("every table's runs = %d, %v", len(all), err)
	}
}

// One worker at a time holds the lease on counting the backlog: it renews it, another takes it
// only once it ran out.
func testOneWorkerCountsTheBacklogAtATime(t *testing.T, h Harness) {
	s, other := h.Open(t, 0), h.Open(t, 0)
	ctx := context.Background()
	a, b := "a-"+uuid.NewString()[:8], "b-"+uuid.NewString()[:8]
	// The lease is one per database: wait out one a former test left (a short one, see below).
	deadline := time.Now().Add(30 * time.Second)
	for {
		held, err := s.LeaseBacklogCount(ctx, a, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if held {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the counting lease never came free")
		}
		time.Sleep(50 * time.Millisecond) // polling a condition with a deadline
	}
	if held, err := other.LeaseBacklogCount(ctx, b, time.Hour); err != nil || held {
		t.Fatalf("a second worker took a held lease: %v, %v", held, err)
	}
	// a renews it, now short: once it ran out, b takes it and a has lost it.
	if held, err := s.LeaseBacklogCount(ctx, a, 200*time.Millisecond); err != nil || !held {
		t.Fatalf("renewing = %v, %v", held, err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		held, err := other.LeaseBacklogCount(ctx, b, 200*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if held {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a lease that ran out was not taken")
		}
		time.Sleep(20 * time.Millisecond) // polling a condition with a deadline
	}
	if held, err := s.LeaseBacklogCount(ctx, a, time.Hour); err != nil || held {
		t.Fatalf("the former holder kept the lease b took: %v, %v", held, err)
	}
	// Only its holder gives a lease up; once b did, a takes it at once.
	if err := s.ReleaseBacklogCount(ctx, a); err != nil {
		t.Fatal(err)
	}
	if held, err := other.LeaseBacklogCount(ctx, b, time.Hour); err != nil || !held {
		t.Fatalf("another's release freed b's lease: %v, %v", held, err)
	}
	if err := other.ReleaseBacklogCount(ctx, b); err != nil {
		t.Fatal(err)
	}
	if held, err := s.LeaseBacklogCount(ctx, a, time.Minute); err != nil || !held {
		t.Fatalf("after b gave the lease up a could not take it: %v, %v", held, err)
	}
	if err := s.ReleaseBacklogCount(ctx, a); err != nil {
		t.Fatal(err)
	}
}

// The changes in hand are every worker's last report added up, and only the fresh ones: a
// worker's new report replaces its last, and a worker gone stops counting once its report ages.
func testChangesInHandAreTheFreshReportsAddedUp(t *testing.T, h Harness) {
	s, other := h.Open(t, 0), h.Open(t, 0)
	ctx := context.Background()
	table := "h" + uuid.NewString()[:8]
	a, b := "a-"+table, "b-"+table
	inHand := func(fresh time.Duration) uint64 {
		t.Helper()
		all, err := s.InHand(ctx, fresh)
		if err != nil {
			t.Fatal(err)
		}
		return all[table]
	}
	if err := s.ReportBacklog(ctx, a, map[string]uint64{table: 3, table + "x": 1}, nil); err != nil {
		t.Fatal(err)
	}
	if err := other.ReportBacklog(ctx, b, map[string]uint64{table: 4}, nil); err != nil {
		t.Fatal(err)
	}
	if n := inHand(time.Minute); n != 7 {
		t.Fatalf("in hand = %d, want 3 + 4", n)
	}
	if err := s.ReportBacklog(ctx, a, map[string]uint64{table: 1}, nil); err != nil {
		t.Fatal(err)
	}
	if n := inHand(time.Minute); n != 5 {
		t.Fatalf("in hand after a's new report = %d, want 1 + 4", n)
	}
	// b goes on reporting, a stops: once a's report is older than the freshness, only b's counts.
	deadline := time.Now().Add(10 * time.Second)
	for {
		time.Sleep(20 * time.Millisecond) // polling a condition with a deadline
		if err := other.ReportBacklog(ctx, b, map[string]uint64{table: 4}, nil); err != nil {
			t.Fatal(err)
		}
		if n := inHand(300 * time.Millisecond); n == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a's old report still counts: %d in hand", inHand(300*time.Millisecond))
		}
	}
	if err := other.ReportBacklog(ctx, b, map[string]uint64{}, nil); err != nil {
		t.Fatal(err)
	}
	if n := inHand(time.Minute); n != 1 {
		t.Fatalf("in hand after b reported nothing = %d, want a's 1 (still younger than a minute)", n)
	}
}
