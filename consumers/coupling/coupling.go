// Package coupling is a person's coupling actions on one record, as Business Central's pages
// offer them: couple it to a given Dataverse row, uncouple it, sync it now, and for a record
// whose Dataverse row was deleted, restore the row or delete the coupling. Every action changes
// the coupling under the record's claim (storage.Store.EditCoupling), so that it never races a
// worker, and is audited.
package coupling

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dvsync/dvsync/consumers/replay"
	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/events"
	"github.com/dvsync/dvsync/infra/natsjs"
	"github.com/dvsync/dvsync/infra/storage"
)

// Store is what the actions need of the couplings and the ledger.
type Store interface {
	Coupling(ctx context.Context, table, key string) (domain.Coupling, error)
	EditCoupling(ctx context.Context, table, key, actor, action string, edit func(ctx context.Context, current domain.Coupling) (storage.CouplingEdit, error)) error
	CouplingOfRow(ctx context.Context, entity string, rowID uuid.UUID) (domain.Coupling, error)
	PageErrors(ctx context.Context, f storage.ErrorFilter) (storage.ErrorPage, error)
}

// Replayer sends the changes the ledger keeps again.
type Replayer interface {
	Replay(ctx context.Context, ids []int64, actor string) []replay.Result
}

// ChangeFinder finds a record's newest change in the changes stream (natsjs.ChangeFinder).
type ChangeFinder interface {
	Newest(ctx context.Context, table, key string) (natsjs.ChangeSearch, error)
}

// RowChecker reads a Dataverse row's version (domain.Dataverse does).
type RowChecker interface {
	RowVersion(ctx context.Context, row domain.RowRef) (version string, found bool, err error)
}

// Actions runs the coupling actions.
type Actions struct {
	Store    Store
	Mappings domain.Mappings
	Replay   Replayer
	// Changes and JS send a record's newest change again when the ledger keeps none (a synced
	// record); without them Sync now sends only what the ledger keeps.
	Changes ChangeFinder
	JS      jetstream.JetStream
	// Rows, when set, checks that the row a person couples a record to exists (its version is
	// the coupling's); without it the next sync finds out.
	Rows RowChecker
	Log  *slog.Logger
}

// Result is what an action did.
type Result struct {
	Table   string `json:"table"`
	Key     string `json:"key"`
	Action  string `json:"action"`
	Message string `json:"message"`
	// RowID is the record's Dataverse row after the action, when it has one.
	RowID *uuid.UUID `json:"row_id,omitempty"`
	// Sent says how the newest change was sent again (Sync now, Restore): the replay of an
	// error, or the change read from the stream, with its message id.
	Sent *Sent `json:"sent,omitempty"`
}

// Sent is a change an action published again.
type Sent struct {
	ErrorID   int64  `json:"error_id,omitempty"`
	Sequence  uint64 `json:"stream_sequence,omitempty"`
	Version   int64  `json:"version"`
	MessageID string `json:"message_id"`
}

// Refusal is an action that does not apply to the record as it stands; Message says why, in
// Business Central's words where it has them.
type Refusal struct{ Message string }

func (r *Refusal) Error() string { return r.Message }

// ErrUnknownTable is a table no mapping covers.
var ErrUnknownTable = errors.New("no mapping covers this table")

func refuse(format string, args ...any) error { return &Refusal{Message: fmt.Sprintf(format, args...)} }

func (a *Actions) mapping(table string) (domain.Mapping, error) {
	m, ok := a.Mappings.For(table)
	if !ok {
		return m, fmt.Errorf("%w: %q", ErrUnknownTable, table)
	}
	return m, nil
}

func ref(table, key string) string { return table + " " + key }

// Couple couples a record to an existing Dataverse row, as Business Central's "Set Up Coupling"
// does: refused when the row is coupled to another record or the record to a row already. The
// store claims the row as a worker's sync does, so that a worker matching another record to the
// row at the same moment cannot couple it too. The record's coupling errors are resolved and its
// skip and failure count cleared (its setup errors stay: a coupling does not fix them). The
// record's next change updates the row; Sync now sends its newest one.
func (a *Actions) Couple(ctx context.Context, table, key string, row uuid.UUID, actor string) (Result, error) {
	res := Result{Table: table, Key: key, Action: domain.ActionCouple.Command}
	m, err := a.mapping(table)
	if err != nil {
		return res, err
	}
	if row == uuid.Nil {
		return res, refuse("Name the Dataverse %s row to couple %s to by its id.", m.Entity, ref(table, key))
	}
	version := domain.AnyVersion
	if a.Rows != nil {
		v, found, err := a.Rows.RowVersion(ctx, m.Row(row))
		if err != nil {
			return res, fmt.Errorf("read the Dataverse row %s: %w", m.Row(row), err)
		}
		if !found {
			return res, refuse("Cannot couple %s: Dataverse has no %s row %s.", ref(table, key), m.Entity, row)
		}
		version = v
	}
	err = a.Store.EditCoupling(ctx, table, key, actor, domain.ActionCouple.Command, func(ctx context.Context, cur domain.Coupling) (storage.CouplingEdit, error) {
		if other, err := a.Store.CouplingOfRow(ctx, m.Entity, row); err != nil {
			return storage.CouplingEdit{}, err
		} else if other.Exists && (other.Table != table || other.Key != key) {
			return storage.CouplingEdit{}, alreadyCoupled(table, key, m.Entity, other)
		}
		switch {
		case cur.Coupled() && cur.RowID == row:
			return storage.CouplingEdit{}, refuse("%s is already coupled to this %s record (%s).", ref(table, key), m.Entity, row)
		case cur.Coupled():
			return storage.CouplingEdit{}, refuse("Cannot couple %s to this %s record, because %s is already coupled to %s. Uncouple it first.",
				ref(table, key), m.Entity, ref(table, key), cur.Row())
		case cur.Status == domain.CouplingDeleted:
			return storage.CouplingEdit{}, refuse("%s was deleted in the source: it cannot be coupled.", ref(table, key))
		}
		next := cur
		next.Table, next.Key, next.RowID, next.Entity, next.RowVersion = table, key, row, m.Entity, version
		next.RowName = "" // another row's; the record's next sync sends this one's
		next.Skipped, next.LastErrorKind, next.Failures = false, "", 0
		if next.Status != domain.CouplingFailed {
			next.Status = domain.CouplingSynced
		}
		return storage.CouplingEdit{Next: &next, Target: fmt.Sprintf("%s/%s to %s %s", table, key, m.Entity, row),
			Resolve: "the record was coupled by " + actor, ResolveClass: domain.ClassCoupling}, nil
	})
	var taken *domain.RowTakenError
	if errors.As(err, &taken) { // coupled to another record since the check above
		return res, alreadyCoupled(table, key, m.Entity, taken.Other)
	}
	if err != nil {
		return res, err
	}
	res.RowID = &row
	res.Message = fmt.Sprintf("%s is coupled to %s %s; its next change updates that row (%s sends its newest change now).",
		ref(table, key), m.Entity, row, domain.ActionSyncNow.Button)
	return res, nil
}

// alreadyCoupled is Business Central's refusal of a row coupled to another record.
func alreadyCoupled(table, key, entity string, other domain.Coupling) error {
	return refuse("Cannot couple %s to this %s record, because the %s record is already coupled to %s.",
		ref(table, key), entity, entity, ref(other.Table, other.Key))
}

// Uncouple removes the record's link to its Dataverse row; the row stays in Dataverse, and the
// record's open errors are resolved. Its version is kept: an older change still counts as stale.
// Its next change creates a row with the record's deterministic id, or finds and adopts the row
// dvsync created for it before; a new row when another record has that one meanwhile.
func (a *Actions) Uncouple(ctx context.Context, table, key, actor string) (Result, error) {
	res := Result{Table: table, Key: key, Action: domain.ActionUncouple.Command}
	if _, err := a.mapping(table); err != nil {
		return res, err
	}
	var was domain.Coupling
	err := a.Store.EditCoupling(ctx, table, key, actor, domain.ActionUncouple.Command, func(_ context.Context, cur domain.Coupling) (storage.CouplingEdit, error) {
		if !cur.Coupled() {
			return storage.CouplingEdit{}, refuse("The record %s is not coupled to Dataverse.", ref(table, key))
		}
		was = cur
		next := cur
		next.RowID, next.RowVersion, next.RowName, next.Status = uuid.Nil, "", "", domain.CouplingUncoupled
		next.Skipped, next.LastErrorKind, next.Failures = false, "", 0
		return storage.CouplingEdit{Next: &next, Target: fmt.Sprintf("%s/%s from %s", table, key, cur.Row()),
			Resolve: "the record was uncoupled by " + actor}, nil
	})
	if err != nil {
		return res, err
	}
	res.Message = fmt.Sprintf("%s is uncoupled from %s; the row stays in Dataverse.", ref(table, key), was.Row())
	return res, nil
}

// DeleteCoupling deletes the record's coupling, as Business Central's "Delete Coupling": the
// record is as if never synced (the Dataverse row, if any, stays), and its open errors are
// resolved.
func (a *Actions) DeleteCoupling(ctx context.Context, table, key, actor string) (Result, error) {
	res := Result{Table: table, Key: key, Action: domain.ActionDeleteCoupling.Command}
	if _, err := a.mapping(table); err != nil {
		return res, err
	}
	var was domain.Coupling
	err := a.Store.EditCoupling(ctx, table, key, actor, domain.ActionDeleteCoupling.Command, func(_ context.Context, cur domain.Coupling) (storage.CouplingEdit, error) {
		if !cur.Exists {
			return storage.CouplingEdit{}, refuse("The record %s has no coupling.", ref(table, key))
		}
		was = cur
		target := fmt.Sprintf("%s/%s (%s)", table, key, cur.Status)
		if cur.RowID != uuid.Nil {
			target = fmt.Sprintf("%s/%s (%s, %s)", table, key, cur.Status, cur.Row())
		}
		return storage.CouplingEdit{Remove: true, Target: target, Resolve: "the coupling was deleted by " + actor}, nil
	})
	if err != nil {
		return res, err
	}
	res.Message = fmt.Sprintf("The coupling of %s is deleted.", ref(table, key))
	if was.RowID != uuid.Nil {
		res.Message = fmt.Sprintf("The coupling of %s to %s is deleted; the row, if it still exists, stays in Dataverse.", ref(table, key), was.Row())
	}
	return res, nil
}

// Restore re-creates the Dataverse row of a record whose row was deleted there and couples it
// again: the coupling forgets the deleted row, and the record's newest change is sent, which
// creates the row with the record's deterministic id.
func (a *Actions) Restore(ctx context.Context, table, key, actor string) (Result, error) {
	res := Result{Table: table, Key: key, Action: domain.ActionRestore.Command}
	if _, err := a.mapping(table); err != nil {
		return res, err
	}
	var was domain.Coupling
	err := a.Store.EditCoupling(ctx, table, key, actor, domain.ActionRestore.Command, func(_ context.Context, cur domain.Coupling) (storage.CouplingEdit, error) {
		if cur.LastErrorKind != domain.KindDestinationDeleted || !cur.Coupled() {
			return storage.CouplingEdit{}, refuse("%s applies only to a record whose Dataverse row was deleted; %s is not one.",
				domain.ActionRestore.Button, ref(table, key))
		}
		was = cur
		next := cur
		next.RowID, next.RowVersion, next.Skipped = uuid.Nil, "", false
		return storage.CouplingEdit{Next: &next, Target: fmt.Sprintf("%s/%s: the deleted %s is created again", table, key, cur.Row())}, nil
	})
	if err != nil {
		return res, err
	}
	sent, err := a.send(ctx, table, key, actor)
	if err != nil {
		return res, fmt.Errorf("%s forgot the deleted row, but its newest change could not be sent (%s sends it): %w", ref(table, key), domain.ActionSyncNow.Button, err)
	}
	res.Sent = sent
	res.Message = fmt.Sprintf("%s is being restored: its newest change (version %d) is sent, and creates the %s row again.", ref(table, key), sent.Version, was.Entity)
	return res, nil
}

// SyncNow sends the record's newest change again, at once, skipped or not: the change its open
// error keeps, or else the newest the changes stream holds.
func (a *Actions) SyncNow(ctx context.Context, table, key, actor string) (Result, error) {
	res := Result{Table: table, Key: key, Action: domain.ActionSyncNow.Command}
	if _, err := a.mapping(table); err != nil {
		return res, err
	}
	sent, err := a.send(ctx, table, key, actor)
	if err != nil {
		return res, err
	}
	res.Sent = sent
	res.Message = fmt.Sprintf("The newest change of %s (version %d) is sent again.", ref(table, key), sent.Version)
	return res, nil
}

// send publishes the record's newest change again: its open error's (a replay, audited as one),
// or else the stream's, with the record's version set back just below it so that the worker does
// not take it as stale (audited as sync).
func (a *Actions) send(ctx context.Context, table, key, actor string) (*Sent, error) {
	page, err := a.Store.PageErrors(ctx, storage.ErrorFilter{Table: table, Key: key, Status: storage.ErrorOpen, Limit: 20})
	if err != nil {
		return nil, err
	}
	for _, e := range page.Errors { // newest first
		if e.Table != table || e.Key != key || len(e.Event) == 0 || e.NotReplayable != nil || e.Kind == domain.KindInvalidEvent {
			continue
		}
		r := a.Replay.Replay(ctx, []int64{e.ID}, actor)[0]
		switch r.Outcome {
		case replay.Published:
			s := &Sent{ErrorID: e.ID, MessageID: r.MessageID}
			if e.EventVersion != nil {
				s.Version = *e.EventVersion
			}
			return s, nil
		case replay.Stale: // a newer version synced since: the stream has it
			return a.resend(ctx, table, key, actor)
		default:
			return nil, refuse("The change of error %d could not be sent again: %s %s.", e.ID, r.Outcome, r.Detail)
		}
	}
	return a.resend(ctx, table, key, actor)
}

func (a *Actions) resend(ctx context.Context, table, key, actor string) (*Sent, error) {
	if a.Changes == nil || a.JS == nil {
		return nil, refuse("No change of %s is kept in the errors ledger, and this server does not read the changes stream.", ref(table, key))
	}
	found, err := a.Changes.Newest(ctx, table, key)
	if err != nil {
		return nil, err
	}
	if found.Found == nil {
		return nil, refuse("No change of %s is kept: the errors ledger has none, and the newest %d changes of the changes stream hold none.", ref(table, key), found.Window)
	}
	if !found.Complete {
		// Time ran out before the window was read: a newer change may lie beyond what was read.
		return nil, refuse("The changes stream could not be read in time to find the newest change of %s; try again.", ref(table, key))
	}
	c := found.Found
	ev, bad := events.Decode(c.Subject, c.Headers, c.Data)
	if bad != nil {
		return nil, refuse("The newest change of %s in the stream is not a valid event: %s", ref(table, key), bad.Message)
	}
	msgID := fmt.Sprintf("dvsync-sync-%d-%d", c.Sequence, time.Now().UnixNano())
	err = a.Store.EditCoupling(ctx, table, key, actor, domain.ActionSyncNow.Command, func(_ context.Context, cur domain.Coupling) (storage.CouplingEdit, error) {
		e := storage.CouplingEdit{Target: fmt.Sprintf("%s/%s: version %d (stream sequence %d) sent again as %s", table, key, ev.Version, c.Sequence, msgID)}
		switch {
		case cur.Exists && cur.Version > ev.Version:
			// The stream's newest change is older than what synced (published out of order):
			// sending it again would write older data over newer.
			return e, refuse("%s synced version %d, newer than its newest change in the stream (version %d): nothing to send again.", ref(table, key), cur.Version, ev.Version)
		case cur.Exists && cur.Version == ev.Version:
			// One below, so that the worker does not take the change it sends again as stale.
			next := cur
			next.Version = ev.Version - 1
			e.Next = &next
		}
		return e, nil
	})
	if err != nil {
		return nil, err
	}
	if err := replay.Resend(ctx, a.JS, c.Subject, c.Headers, c.Data, actor, msgID); err != nil {
		return nil, fmt.Errorf("publish the newest change of %s: %w", ref(table, key), err)
	}
	if a.Log != nil {
		a.Log.Info("record's newest change sent again", "table", table, "key", key, "version", ev.Version, "by", actor)
	}
	return &Sent{Sequence: c.Sequence, Version: ev.Version, MessageID: msgID}, nil
}
