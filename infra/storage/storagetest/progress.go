package storagetest

import (
	"context"
	"errors"
	"testing"

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
	if _, ok := period(s); ok {
		t.Fatal("a tick opened a period")
	}
	if opened, err := s.StartBacklog(ctx, table, storage.BacklogLoading, 120, 7); err != nil || !opened {
		t.Fatalf("start = %v, %v", opened, err)
	}
	if opened, err := other.StartBacklog(ctx, table, storage.BacklogCatchingUp, 999, 9); err != nil || opened {
		t.Fatalf("a second start while one is open = %v, %v", opened, err)
	}
	if err := s.TickBacklog(ctx, table, 20, 100); err != nil {
		t.Fatal(err)
	}
	if err := other.TickBacklog(ctx, table, 10, 90); err != nil {
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
