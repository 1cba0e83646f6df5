package replay

import (
	"context"
	"fmt"
	"time"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/storage"
)

// Lister lists the errors ledger, for a coupling run.
type Lister interface {
	PageErrors(ctx context.Context, f storage.ErrorFilter) (storage.ErrorPage, error)
}

// CouplingRun is what a coupling run of a table did, counted as Business Central's coupling job
// log counts: records coupled to a row they matched, records for which a row was created, and
// records that failed; Pending had no outcome yet when the run stopped waiting, Skipped were not
// sent (already coupled meanwhile, being replayed, or their change may not be sent).
type CouplingRun struct {
	Table   string      `json:"table"`
	Records int         `json:"records"`
	Coupled int         `json:"coupled"`
	Created int         `json:"created"`
	Failed  int         `json:"failed"`
	Pending int         `json:"pending"`
	Skipped int         `json:"skipped"`
	Results []RunRecord `json:"results"`
}

// RunRecord is one record of a coupling run.
type RunRecord struct {
	Key     string `json:"key"`
	ErrorID int64  `json:"error_id"`
	// Outcome is coupled, created, failed, pending, or the replay's outcome when it was not sent.
	Outcome string `json:"outcome"`
	RowID   string `json:"row_id,omitempty"`
	Detail  string `json:"detail,omitempty"`
}

// maxRunRecords bounds one coupling run; a second run takes the rest.
const maxRunRecords = 5000

// CoupleTable is a coupling run for a whole table. dvsync has no source database: the records of
// a table it can couple are those without a Dataverse row whose newest change the errors ledger
// keeps (each record's open error: a no_match, multiple_matches, already_coupled, a missing
// dependency, any failure of its first sync). Each is sent again, as a person's retry, and its
// worker looks for its row by the mapping's match fields before it creates one. The run waits up
// to wait for every record's outcome and counts them; a record is "created" when its row has the
// id dvsync creates rows with, "coupled" when it is a row that existed.
func (r *Replayer) CoupleTable(ctx context.Context, ledger Lister, table, actor string, wait time.Duration) (CouplingRun, error) {
	return r.CoupleTableWatched(ctx, ledger, table, actor, wait, nil)
}

// CoupleTableWatched is CoupleTable telling watch, when not nil, the run's counts so far: while
// it lists its records (Listed false) and after every look at their outcomes (h-progress).
func (r *Replayer) CoupleTableWatched(ctx context.Context, ledger Lister, table, actor string, wait time.Duration, watch func(run CouplingRun, listed bool)) (CouplingRun, error) {
	if watch == nil {
		watch = func(CouplingRun, bool) {}
	}
	run := CouplingRun{Table: table, Results: []RunRecord{}}
	type pendingRecord struct {
		i      int
		before domain.Coupling
	}
	var pending []pendingRecord
	seen := map[string]bool{}
	f := storage.ErrorFilter{Table: table, Status: storage.ErrorOpen, Limit: 1000}
	for len(seen) < maxRunRecords {
		page, err := ledger.PageErrors(ctx, f)
		if err != nil {
			return run, fmt.Errorf("coupling run of %s: %w", table, err)
		}
		for _, e := range page.Errors { // newest first: a record's newest error is its newest change
			if seen[e.Key] || e.Class != domain.ClassCoupling && e.Class != domain.ClassSetup {
				continue
			}
			seen[e.Key] = true
			before, err := r.Store.Coupling(ctx, table, e.Key)
			if err != nil {
				return run, fmt.Errorf("coupling run of %s: %w", table, err)
			}
			rec := RunRecord{Key: e.Key, ErrorID: e.ID}
			if before.Coupled() {
				rec.Outcome, rec.RowID, rec.Detail = "skipped", before.RowID.String(), "already coupled"
				run.Skipped++
				run.Results = append(run.Results, rec)
				continue
			}
			res := r.Replay(ctx, []int64{e.ID}, actor)[0]
			if res.Outcome != Published {
				rec.Outcome, rec.Detail = string(res.Outcome), res.Detail
				run.Skipped++
				run.Results = append(run.Results, rec)
				continue
			}
			rec.Outcome = "pending"
			pending = append(pending, pendingRecord{i: len(run.Results), before: before})
			run.Results = append(run.Results, rec)
		}
		watch(run.count(), false)
		if page.Next == "" {
			break
		}
		f.Cursor = page.Next
	}
	run.Records = len(run.Results)
	watch(run.count(), true)
	deadline := time.Now().Add(wait)
	for len(pending) > 0 {
		left := pending[:0]
		for _, p := range pending {
			rec := &run.Results[p.i]
			c, err := r.Store.Coupling(ctx, table, rec.Key)
			if err != nil {
				return run, fmt.Errorf("coupling run of %s: %w", table, err)
			}
			switch {
			case c.Coupled() && c.RowID == domain.DeterministicRowID(table, rec.Key):
				rec.Outcome, rec.RowID = "created", c.RowID.String()
			case c.Coupled():
				rec.Outcome, rec.RowID = "coupled", c.RowID.String()
			case c.LastAttemptAt.After(p.before.LastAttemptAt) || c.Failures != p.before.Failures || c.Version > p.before.Version:
				// Tried since the run sent it, and still without a row.
				rec.Outcome, rec.Detail = "failed", string(c.LastErrorKind)
			default:
				left = append(left, p)
			}
		}
		pending = left
		watch(run.count(), true)
		if len(pending) == 0 || !time.Now().Before(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return run.count(), ctx.Err()
		case <-time.After(100 * time.Millisecond): // polling the store: the workers report nowhere else
		}
	}
	return run.count(), nil
}

func (run CouplingRun) count() CouplingRun {
	run.Coupled, run.Created, run.Failed, run.Pending = 0, 0, 0, 0
	for _, rec := range run.Results {
		switch rec.Outcome {
		case "coupled":
			run.Coupled++
		case "created":
			run.Created++
		case "failed":
			run.Failed++
		case "pending":
			run.Pending++
		}
	}
	return run
}
