package storage

import (
	"context"
	"errors"
	"time"
)

// ProgressStore keeps long work's progress (issue 11 item 5) where every `serve` replica reads the
// same: a table's backlog periods (a first load or a catch-up) and the coupling runs. The store
// stamps every time itself (PostgreSQL's clock, or the embedded store's one process clock), so
// that a rate is never computed from two machines' clocks.
type ProgressStore interface {
	// StartBacklog opens a backlog period of the table unless one is open, and reports whether it
	// opened one. total is the backlog at the start; startSeq the workers' consumer's delivered
	// stream sequence then, so a stream recreated since (its sequences start again) ends it.
	StartBacklog(ctx context.Context, table string, kind BacklogKind, total, startSeq uint64) (bool, error)
	// TickBacklog adds done (the counting worker's acks since its last tick; the others' come
	// with ReportBacklog) to the table's open period and stores left, the backlog now, in one
	// statement; without an open period it does nothing.
	TickBacklog(ctx context.Context, table string, done, left uint64) error
	// EndBacklog ends the table's open period (false when there was none). PauseTable ends it too,
	// in its own transaction.
	EndBacklog(ctx context.Context, table string) (bool, error)
	// BacklogPeriods are the open periods, by table.
	BacklogPeriods(ctx context.Context) ([]BacklogPeriod, error)
	// LeaseBacklogCount takes, or renews, the lease on counting the tables' backlog for holder,
	// for ttl from now, and reports whether holder has it: one worker counts at a time (reading
	// JetStream is the costly part), the others only report.
	LeaseBacklogCount(ctx context.Context, holder string, ttl time.Duration) (bool, error)
	// ReleaseBacklogCount gives holder's lease up (a worker that stops), so that another worker
	// counts at its next tick instead of once the lease ran out; not holding it is no error.
	ReleaseBacklogCount(ctx context.Context, holder string) error
	// ReportBacklog stores a worker's report, in one transaction: inHand, the changes it holds
	// per table, replaces its last report (stamped now); acked, the changes it acked per table
	// since its last report, is added to those tables' open periods' done. On error nothing is
	// stored. Reports older than an hour (of workers gone) are removed.
	ReportBacklog(ctx context.Context, worker string, inHand, acked map[string]uint64) error
	// InHand sums, per table, the changes in hand of the reports younger than freshFor.
	InHand(ctx context.Context, freshFor time.Duration) (map[string]uint64, error)

	// StartCouplingRun records a coupling run of the table as started by actor. While another run
	// of the table is unfinished and beating, it fails with ErrRunInProgress; an unfinished run
	// whose heartbeat is older than StaleRunAfter is marked interrupted and the new one starts.
	StartCouplingRun(ctx context.Context, table, actor string) (CouplingRunRecord, error)
	// BeatCouplingRun stores a running run's counts and its heartbeat. It is ErrRunLost once the
	// run is finished, by another start that found it stale among others: the run must stop.
	BeatCouplingRun(ctx context.Context, id int64, c RunCounts) error
	// FinishCouplingRun stores a run's last counts and ends it; failure, when not empty, says why
	// it could not finish.
	FinishCouplingRun(ctx context.Context, id int64, c RunCounts, failure string) error
	// CouplingRuns are the table's runs (every table's when table is ""), newest first.
	CouplingRuns(ctx context.Context, table string, limit int) ([]CouplingRunRecord, error)
}

// BacklogKind is why a table has a backlog period.
type BacklogKind string

const (
	// BacklogLoading is a first load: nothing of the table was synced when its backlog began.
	BacklogLoading BacklogKind = "loading"
	// BacklogCatchingUp is a backlog above the threshold, or what waited while the table was paused.
	BacklogCatchingUp BacklogKind = "catching_up"
)

// BacklogPeriod is a table's open backlog period.
type BacklogPeriod struct {
	Table string
	Kind  BacklogKind
	// StartedAt is when it opened, UpdatedAt when a worker last counted it (both the store's clock).
	StartedAt, UpdatedAt time.Time
	// Total is the backlog when it opened; Done the changes acked since; Left the backlog at the
	// last count, handed-out changes included.
	Total, Done, Left uint64
	StartSeq          uint64
}

// NonZero is the counts that are not 0: a report lists what a worker holds.
func NonZero(counts map[string]uint64) map[string]uint64 {
	out := make(map[string]uint64, len(counts))
	for table, n := range counts {
		if n > 0 {
			out[table] = n
		}
	}
	return out
}

// SumInHand adds the workers' reports of the changes they hold up, per table.
func SumInHand(reports []map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for _, r := range reports {
		for table, n := range r {
			out[table] += n
		}
	}
	return out
}

// ReportsKeptFor is how long a worker's backlog report is kept: one older is of a worker gone.
const ReportsKeptFor = time.Hour

// StaleRunAfter is how old an unfinished coupling run's heartbeat may be before the run counts
// as interrupted (its process died): runs beat every few seconds.
const StaleRunAfter = time.Minute

// ErrRunInProgress is a coupling run started while another one of the table runs.
var ErrRunInProgress = errors.New("a coupling run of this table is in progress")

// ErrRunLost is the beat of a run that is no longer unfinished in the store: another start
// marked it interrupted (its heartbeat was stale), and another run of the table may go on now.
var ErrRunLost = errors.New("the coupling run was marked interrupted")

// RunCounts are a coupling run's counts so far. Total is nil while the run is still listing its
// records.
type RunCounts struct {
	Total   *int `json:"total"`
	Done    int  `json:"done"`
	Coupled int  `json:"coupled"`
	Created int  `json:"created"`
	Failed  int  `json:"failed"`
	Skipped int  `json:"skipped"`
}

// Coupling run states.
const (
	RunRunning     = "running"
	RunFinished    = "finished"
	RunFailed      = "failed"
	RunInterrupted = "interrupted"
)

// CouplingRunRecord is one stored coupling run.
type CouplingRunRecord struct {
	ID          int64      `json:"id"`
	Table       string     `json:"table"`
	By          string     `json:"by"`
	State       string     `json:"state"`
	StartedAt   time.Time  `json:"started_at"`
	HeartbeatAt time.Time  `json:"heartbeat_at"`
	FinishedAt  *time.Time `json:"finished_at,omitempty"`
	Failure     string     `json:"failure,omitempty"`
	RunCounts
}

// RunState is a stored run's state from its columns: stale tells an unfinished run whose
// heartbeat is older than StaleRunAfter.
func RunState(finished bool, failure string, stale bool) string {
	switch {
	case finished && failure == "":
		return RunFinished
	case finished && failure == RunInterrupted:
		return RunInterrupted
	case finished:
		return RunFailed
	case stale:
		return RunInterrupted
	}
	return RunRunning
}
