package domain

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// CouplingStatus is where a coupled record stands after its last sync attempt.
type CouplingStatus string

const (
	CouplingSynced    CouplingStatus = "synced"
	CouplingFailed    CouplingStatus = "failed"
	CouplingDeleted   CouplingStatus = "deleted"   // deleted at the source (and in Dataverse per policy)
	CouplingUncoupled CouplingStatus = "uncoupled" // the coupling was removed by policy
)

// Coupling ties a source record to its Dataverse row and remembers how far it was synced.
type Coupling struct {
	Table string
	Key   string
	// RowID is the coupled Dataverse row; uuid.Nil while the record is not coupled.
	RowID  uuid.UUID
	Entity string
	// RowName is the row's primary name (its mapping's PrimaryName) as dvsync last sent it or
	// found it by match, so that messages and the page name the row for people; "" when unknown.
	RowName string
	// RowVersion is the row's version (ETag) after dvsync's last write of it: the next write is
	// conditioned on it, so that a late write can never overwrite a newer one. AnyVersion when
	// unknown.
	RowVersion string
	// Version is the last source version whose outcome is final (synced or deleted); events
	// not newer than it are stale.
	Version      int64
	Status       CouplingStatus
	LastSyncedAt time.Time
	// Skipped records are not sent to Dataverse until retried or until their cause is gone.
	Skipped       bool
	LastErrorKind Kind
	// Failures counts consecutive permanent failures of LastErrorKind.
	Failures      int
	LastAttemptAt time.Time
	Exists        bool // false for a record the store has never seen
}

// Coupled reports whether the record has a live Dataverse row.
func (c Coupling) Coupled() bool {
	return c.RowID != uuid.Nil && (c.Status == CouplingSynced || c.Status == CouplingFailed)
}

// Row names the coupling's Dataverse row for messages.
func (c Coupling) Row() NamedRow { return NamedRow{Entity: c.Entity, ID: c.RowID, Name: c.RowName} }

// NamedRow is a Dataverse row as messages name it: by its entity and primary name where dvsync
// knows the name, with its id, which is what a person searches or couples by.
type NamedRow struct {
	Entity string
	ID     uuid.UUID
	Name   string
}

// String is `account "Adatum Corporation" (7ba8…)`, or `account 7ba8…` when the name is unknown.
func (r NamedRow) String() string {
	if r.Name == "" {
		return fmt.Sprintf("%s %s", r.Entity, r.ID)
	}
	return fmt.Sprintf("%s %q (%s)", r.Entity, r.Name, r.ID)
}

// ErrStoreRejected marks a store error caused by the record's own data (a value the database
// cannot hold): trying again cannot help, so it is reported, never retried.
var ErrStoreRejected = errors.New("the coupling store cannot hold this record's data")

// ErrRecordBusy is UpdateCoupling finding the record held by another worker: nothing was done,
// and the caller tries again shortly (the other worker is done within its handle timeout).
var ErrRecordBusy = errors.New("the record is being synced by another worker")

// ErrRowBusy is RecordLock.ClaimRow finding the row claimed by another record whose sync is under
// way: it matches ErrRecordBusy, so that the caller tries again shortly and then finds the row
// coupled to that record (already_coupled) or free (its sync failed).
var ErrRowBusy = fmt.Errorf("%w: its Dataverse row is being coupled to another record", ErrRecordBusy)

// RowTakenError is a Dataverse row coupled to another record. Business Central couples a row to
// at most one record: the second record gets already_coupled, naming the first.
type RowTakenError struct {
	Entity string
	Row    uuid.UUID
	// Other is the record the row is coupled to (Table, Key, RowName).
	Other Coupling
}

func (e *RowTakenError) Error() string {
	return fmt.Sprintf("the %s row %s is already coupled to %s/%s", e.Entity, e.Row, e.Other.Table, e.Other.Key)
}

// CouplingStore keeps couplings. UpdateCoupling runs update while no other worker (in this
// process or another) can update the same record, and stores what it returns; when update
// returns an error nothing is stored. When another worker holds the record it may return
// ErrRecordBusy instead of waiting.
type CouplingStore interface {
	Coupling(ctx context.Context, table, key string) (Coupling, error)
	UpdateCoupling(ctx context.Context, table, key string, update func(ctx context.Context, current Coupling, lock RecordLock) (Coupling, error)) error
	// CouplingOfRow returns the record coupled to a Dataverse row of the entity (a live coupling:
	// synced or failed); Exists is false when no record is. A person's Couple asks it to refuse a
	// taken row early; a sync relies on RecordLock.ClaimRow, which checks it atomically.
	CouplingOfRow(ctx context.Context, entity string, row uuid.UUID) (Coupling, error)
}

// RecordLock is the hold UpdateCoupling has on a record while update runs. A lock can be lost
// under the caller (the store's connection breaks, its database restarts) and another worker
// then takes the record: update checks Held before it writes to Dataverse again, so that a
// worker that lost the record never overwrites what the new holder wrote.
type RecordLock interface {
	Held(ctx context.Context) error
	// ClaimRow claims a Dataverse row for the record before the record is coupled to it (a row
	// it matched, creates or adopts), atomically with the check that no other record is coupled to
	// the row: two records can never both take one row. The claim lasts as long as the record's
	// and is dropped when the record's coupling is stored or its claim released. It is a
	// *RowTakenError when another record is coupled to the row, ErrRowBusy when another record
	// holds a claim on it (try again later), ErrLockLost-like when the record's claim is gone.
	ClaimRow(ctx context.Context, entity string, row uuid.UUID) error
}

// rowNamespace seeds the deterministic row ids dvsync gives the rows it creates.
var rowNamespace = uuid.MustParse("6f0e3f43-3c1d-4b8e-9a55-0d5b1c2f7a10")

// DeterministicRowID is the id dvsync creates a record's Dataverse row with. Because it depends
// only on the record, a retry after a crash between the Dataverse write and the coupling commit
// finds the row it created (and adopts it) instead of creating a second one.
func DeterministicRowID(table, key string) uuid.UUID {
	return uuid.NewSHA1(rowNamespace, []byte(table+"\x00"+key))
}
