// Package storage is the contract of dvsync's stores: the couplings, the errors ledger, the
// replays, the audit log and the page sessions, as PostgreSQL (infra/postgres) and the embedded
// SQLite store of `dvsync dev` (infra/sqlite) both keep them. The types and rules both share live
// here; storagetest holds the one test suite both pass.
package storage

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
)

// Store is everything dvsync's processes keep in their database.
type Store interface {
	// domain.CouplingStore includes CouplingOfRow (match-based coupling, h-match): the domain
	// asks it; both stores implement it in match.go.
	domain.CouplingStore
	domain.ErrorLedger

	// RecordErrorChecked stores one error event whose Event, EventHeaders, EventID and
	// EventVersion the caller read back from the changes stream; notReplayable, when not empty,
	// says why they may not be sent again. A redelivered event (same id) changes nothing; a new
	// occurrence of an active error of the same record and kind adds to it, and the newest change
	// wins: an occurrence of an older version only counts, and so does one not read back against
	// one that was. An error of a version that has synced since is stored as resolved.
	RecordErrorChecked(ctx context.Context, ev domain.ErrorEvent, notReplayable string) error
	// WaitingOn returns the replayable open errors of records that failed because the dependency
	// table/key was not coupled, oldest first, at most limit of them.
	WaitingOn(ctx context.Context, table, key string, limit int) ([]int64, error)

	PageErrors(ctx context.Context, f ErrorFilter) (ErrorPage, error)
	ListErrors(ctx context.Context, f ErrorFilter) ([]StoredError, error)
	GetError(ctx context.Context, id int64) (ErrorDetail, error)
	DeleteErrors(ctx context.Context, cutoff time.Time, actor string) (int64, error)
	DeleteError(ctx context.Context, id int64, actor string) error

	ClaimReplay(ctx context.Context, id int64) (ReplayClaim, error)
	ReleaseReplay(ctx context.Context, c ReplayClaim) error
	FinishReplay(ctx context.Context, c ReplayClaim, messageID, actor, outcome string) error

	Audit(ctx context.Context, limit int) ([]AuditEntry, error)
	Status(ctx context.Context) ([]TableStatus, error)
	ListCouplings(ctx context.Context, f CouplingFilter) ([]domain.Coupling, error)

	EndSession(ctx context.Context, id string, expires time.Time) error
	SessionEnded(ctx context.Context, id string) (bool, error)

	// CountLedger sums up the open errors and skipped records for the metrics; it reads only
	// what partial indexes hold, so it is cheap at any size.
	CountLedger(ctx context.Context) (LedgerCounts, error)

	// Manual coupling actions (h-manual): a person couples, uncouples, restores or deletes the
	// coupling of one record. EditCoupling claims the record as UpdateCoupling does (so that it
	// never races a worker; domain.ErrRecordBusy when one holds it), runs edit, and stores what it
	// returns with its audit entry in one transaction; an error from edit stores nothing.
	EditCoupling(ctx context.Context, table, key, actor, action string, edit func(ctx context.Context, current domain.Coupling) (CouplingEdit, error)) error

	// Preflight (h-pre): ResolvePreflight resolves the open preflight errors (table and stage
	// domain.PreflightTable) that a check no longer finds: whose key is not among its gaps and
	// that were last seen no later than it ran, so that a later check's gap stays open.
	ResolvePreflight(ctx context.Context, checked domain.PreflightChecked) error
	// Pause and resume per table (h-pause): a paused table's changes wait in the changes stream
	// (the workers nak them with a delay) until it is resumed. Each change of state is audited in
	// the transaction that stores it; asking for the state a table is in already changes nothing
	// and reports false. PauseTable ends the table's backlog period; ResumeTable opens its
	// catch-up period (ProgressStore) when backlog, the table's waiting changes, is not 0, with
	// startSeq the workers' consumer's delivered position then.
	PauseTable(ctx context.Context, table, actor string) (bool, error)
	ResumeTable(ctx context.Context, table, actor string, backlog, startSeq uint64) (bool, error)
	// TableStates are the tables ever paused, by name.
	TableStates(ctx context.Context) ([]TableState, error)
	// ProgressStore is long work's progress (h-progress, progress.go).
	ProgressStore

	// Ping checks the database answers, for health checks.
	Ping(ctx context.Context) error
	// Close finishes what is pending and closes the database; calling it again does nothing.
	Close()
}

// ErrorStatus is where a stored error stands.
type ErrorStatus string

const (
	ErrorOpen     ErrorStatus = "open"
	ErrorResolved ErrorStatus = "resolved"
	ErrorReplayed ErrorStatus = "replayed"
)

// StoredError is one row of the errors ledger.
type StoredError struct {
	ID               int64             `json:"id"`
	Class            domain.Class      `json:"class"`
	Kind             domain.Kind       `json:"kind"`
	Table            string            `json:"table"`
	Key              string            `json:"key"`
	Message          string            `json:"message"`
	Resolution       string            `json:"resolution"`
	Details          map[string]string `json:"details"`
	DataverseStatus  *int              `json:"dataverse_status,omitempty"`
	DataverseCode    *string           `json:"dataverse_code,omitempty"`
	DataverseMessage *string           `json:"dataverse_message,omitempty"`
	CallStack        []domain.Stage    `json:"call_stack"`
	Stage            string            `json:"stage"`
	Event            []byte            `json:"event"`
	EventID          *string           `json:"event_id,omitempty"`
	EventVersion     *int64            `json:"event_version,omitempty"`
	Entity           *string           `json:"entity,omitempty"`
	RowID            *uuid.UUID        `json:"row_id,omitempty"`
	Delivery         domain.Delivery   `json:"delivery"`
	FirstSeen        time.Time         `json:"first_seen"`
	LastSeen         time.Time         `json:"last_seen"`
	Occurrences      int               `json:"occurrences"`
	Status           ErrorStatus       `json:"status"`
	ResolvedAt       *time.Time        `json:"resolved_at,omitempty"`
	ResolvedReason   *string           `json:"resolved_reason,omitempty"`
	Replays          int               `json:"replays"`
	// NotReplayable says why the kept change may not be sent again; absent when it may.
	NotReplayable *string `json:"not_replayable,omitempty"`
}

// ErrorFilter narrows PageErrors; empty fields match everything.
type ErrorFilter struct {
	Class  domain.Class
	Kind   domain.Kind
	Status ErrorStatus
	Table  string
	Key    string
	Text   string    // in the message, key or table, without regard to case
	Since  time.Time // last seen at or after
	Until  time.Time // last seen before
	Limit  int
	Cursor string // from the previous page's Next
}

// ErrorPage is one page of errors, newest first; Next is the cursor of the next page ("" at the end).
type ErrorPage struct {
	Errors []StoredError `json:"errors"`
	Next   string        `json:"next,omitempty"`
}

// Occurrence is one error event stored into an error.
type Occurrence struct {
	MessageID string          `json:"message_id"`
	SeenAt    time.Time       `json:"seen_at"`
	Delivery  domain.Delivery `json:"delivery"`
}

// Replay is one replay of an error.
type Replay struct {
	Attempt     int       `json:"attempt"`
	MessageID   string    `json:"message_id"`
	RequestedBy string    `json:"requested_by"`
	RequestedAt time.Time `json:"requested_at"`
	Outcome     string    `json:"outcome"`
}

// ErrorDetail is one error in full, with its history.
type ErrorDetail struct {
	StoredError
	EventHeaders map[string][]string `json:"event_headers,omitempty"`
	History      []Occurrence        `json:"occurrences_history"`
	ReplayLog    []Replay            `json:"replays_history"`
}

// ReplayClaim is an error one replay request won, with what it needs to publish the change again.
type ReplayClaim struct {
	ErrorID      int64
	Attempt      int
	ClaimedAt    time.Time // the claim itself: FinishReplay and ReleaseReplay act only while it holds
	Table, Key   string
	Subject      string // where the change was first published
	Event        []byte
	EventHeaders map[string][]string
	EventVersion *int64
}

// AuditEntry is one line of the audit log.
type AuditEntry struct {
	ID       int64     `json:"id"`
	At       time.Time `json:"at"`
	Actor    string    `json:"actor"`
	Action   string    `json:"action"`
	Target   string    `json:"target"`
	Affected int       `json:"affected"`
}

// TableStatus sums up one table's couplings and open errors.
type TableStatus struct {
	Table        string         `json:"table"`
	Synced       int            `json:"synced"`
	Failed       int            `json:"failed"`
	Skipped      int            `json:"skipped"`
	OpenErrors   map[string]int `json:"open_errors"` // by class
	LastSyncedAt *time.Time     `json:"last_synced_at,omitempty"`
	ConsumerLag  *uint64        `json:"consumer_lag,omitempty"`
}

// CouplingFilter narrows ListCouplings.
type CouplingFilter struct {
	Table   string
	Status  domain.CouplingStatus
	Skipped bool
	Text    string // in the key
	Limit   int
}

// Errors every store answers with.
var (
	// ErrNotFound is an error id the ledger does not have.
	ErrNotFound = errors.New("storage: no such error")
	// ErrAlreadyReplaying is a replay that lost to a concurrent one of the same error.
	ErrAlreadyReplaying = errors.New("storage: the error is being replayed by another request")
	// ErrNotReplayable is an error whose change cannot be sent again; the NotReplayableError that
	// wraps it says why.
	ErrNotReplayable = errors.New("storage: the error has no change to replay or is resolved")
	// ErrBadCursor is a cursor that no page gave.
	ErrBadCursor = errors.New("storage: the cursor is not one this API gave")
	// ErrLockLost is a record claim that ran out or was taken: another worker may hold the record now.
	ErrLockLost = errors.New("storage: the record's claim was lost")
)

// NotReplayableError says why an error is not replayed; it matches ErrNotReplayable.
type NotReplayableError struct{ Reason string }

func (e *NotReplayableError) Error() string        { return "storage: not replayable: " + e.Reason }
func (e *NotReplayableError) Is(target error) bool { return target == ErrNotReplayable }

// RejectedError is the database refusing a record's own values (PostgreSQL's data exceptions):
// the same values fail again, so callers report them instead of retrying. It matches
// domain.ErrStoreRejected.
type RejectedError struct {
	Reason string // what the database said, for people: no values quoted
	Err    error
}

func (e *RejectedError) Error() string        { return e.Err.Error() }
func (e *RejectedError) Unwrap() error        { return e.Err }
func (e *RejectedError) Is(target error) bool { return target == domain.ErrStoreRejected }

// Reasons an error is not replayed, besides the one stored with it.
const (
	// NotReadBack is why an error event's own copy of its change is not replayed: anyone who may
	// publish on the error topics could have written it. RecordError stores with it; the
	// projector reads the change back and calls RecordErrorChecked.
	NotReadBack    = "its change was not read back from the changes stream: only what the stream holds is replayed"
	ReasonResolved = "the error is resolved"
	ReasonNoChange = "the error keeps no change to send"
	ReasonInvalid  = "an invalid event is not replayed: it would fail the same way; the publisher must send a corrected event"
)

// ReplayGrace is how long a claimed or published replay counts as under way: a second replay of
// the error is refused until the first is released or this has passed.
const ReplayGrace = 30 * time.Second

// ClaimTTL is how long a record's claim lasts without renewal: a worker that dies leaves its
// records to the others after at most this long. A live worker renews its claims every third of it.
const ClaimTTL = 15 * time.Second

// ClaimMargin is taken off a claim's lease before the worker relies on it, for the clock
// difference between the worker and the database.
const ClaimMargin = 2 * time.Second

// Trusted is how long after sending a claim or renewal the worker relies on a lease of ttl.
func Trusted(ttl time.Duration) time.Duration { return ttl - min(ClaimMargin, ttl/4) }

// CommitTimeout bounds how long a lane waits for its coupling to be stored and its claim released.
const CommitTimeout = 10 * time.Second

// LedgerCounts sum up the ledger, for the metrics.
type LedgerCounts struct {
	// Open are the open errors (open or being replayed) by class and kind.
	Open []OpenErrors
	// Skipped counts the records skipped by the skip rule, by table.
	Skipped map[string]int
}

// OpenErrors are the open errors of one class and kind.
type OpenErrors struct {
	Class  domain.Class
	Kind   domain.Kind
	Count  int
	Oldest time.Time // first sighting of the oldest of them
}

// CouplingEdit is what an EditCoupling edit decided: the coupling to store (or to delete), the
// audit entry's target, and whether the record's open errors are resolved with it. An edit whose
// Next couples the record to a row it was not coupled to claims that row as a worker's sync does
// (domain.RecordLock.ClaimRow): EditCoupling fails with a *domain.RowTakenError when another
// record is coupled to it, and with domain.ErrRowBusy (an ErrRecordBusy) while another record's
// sync claims it.
type CouplingEdit struct {
	// Next is stored unless it is nil (nothing stored: the action is audited only) or Remove is set.
	Next *domain.Coupling
	// Remove deletes the coupling row: the record is as if never synced (the Dataverse row stays).
	Remove bool
	// Target names what the action changed, for the audit log.
	Target string
	// Resolve, when not empty, resolves the record's open and replayed errors with this reason.
	Resolve string
	// ResolveClass, when not empty, resolves only the errors of this class (a manual Couple fixes
	// the record's coupling errors, not its setup errors).
	ResolveClass domain.Class
}

// Lease is how long a record claim may be relied on, by the worker's clock: a store's claims
// keep one, extended by each claim or renewal that went through.
type Lease struct {
	mu    sync.Mutex
	until time.Time
}

// Extend moves the lease's end to until, never back.
func (l *Lease) Extend(until time.Time) {
	l.mu.Lock()
	if until.After(l.until) {
		l.until = until
	}
	l.mu.Unlock()
}

// Check is ErrLockLost once the lease has run out.
func (l *Lease) Check(table, key string) error {
	l.mu.Lock()
	until := l.until
	l.mu.Unlock()
	if time.Now().After(until) {
		return fmt.Errorf("%w: %s/%s: its lease ran out", ErrLockLost, table, key)
	}
	return nil
}

// UpdateOutcome is what UpdateCoupling returns once the update ran (updateErr) and its commit was
// tried (commitErr; stored false when the claim was no longer the worker's): ErrUnchanged is no
// error, the update's own error comes first, and a lost claim stored nothing.
func UpdateOutcome(updateErr, commitErr error, stored bool, table, key string) error {
	switch {
	case errors.Is(updateErr, domain.ErrUnchanged):
		return nil
	case updateErr != nil:
		return updateErr
	case commitErr != nil:
		return commitErr
	case !stored:
		return fmt.Errorf("%w: %s/%s: nothing stored", ErrLockLost, table, key)
	}
	return nil
}

// TableState is whether a table is paused (h-pause); a catch-up is a BacklogPeriod. A table
// never paused has none: it runs.
type TableState struct {
	Table  string
	Paused bool
	// Since is when it was paused, or resumed; By who did it.
	Since time.Time
	By    string
}
