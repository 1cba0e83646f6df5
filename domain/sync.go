package domain

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// NoVersion is a coupling's version before any outcome of the record was final.
const NoVersion int64 = -1

// ErrUnchanged, returned by an UpdateCoupling closure, stores nothing and is not an error to the caller.
var ErrUnchanged = errors.New("coupling unchanged")

// Result is what a sync did with an event.
type Result string

const (
	ResultSynced    Result = "synced"    // written to Dataverse and coupled
	ResultStale     Result = "stale"     // not newer than the last synced version: skipped
	ResultDeleted   Result = "deleted"   // a delete event applied by the mapping's policy
	ResultUncoupled Result = "uncoupled" // the coupling was removed by policy
	ResultFailed    Result = "failed"    // a permanent failure, to be reported
	ResultSkipped   Result = "skipped"   // the record is skipped: the change is kept, not sent
	ResultCoupled   Result = "coupled"   // coupled to the row it matched, its data not written (NoSync)
)

// Outcome is the durable result of syncing one event.
type Outcome struct {
	Result  Result
	RowID   uuid.UUID
	Failure *Failure
	// Stages are the steps the sync went through, kept as the call stack of a failure.
	Stages []Stage
	// ResolvesErrors is true when the record had failed before and now synced, or has just been
	// coupled: its open errors are resolved, and the records that waited for it are replayed.
	ResolvesErrors bool
	// Overwrites counts the writes sent again because the row had changed in Dataverse since
	// dvsync's last write (see Syncer.conditional).
	Overwrites int
	// Match says how a record without a row got one when its mapping couples by match: coupled
	// to the row it matched or created; empty when no match was looked for.
	Match MatchOutcome
}

// Syncer applies change events to Dataverse and keeps couplings. It holds no state of its own,
// so any number of workers may run it against the same store.
type Syncer struct {
	Mappings   Mappings
	Store      CouplingStore
	Dataverse  Dataverse
	Classifier Classifier
	Skip       SkipPolicy
	Now        func() time.Time
	// LocalCurrency is the source's local currency (DVSYNC_LOCAL_CURRENCY): a blank currency code
	// means it, as in Business Central (LCY), so a lookup to the currency table with a blank code
	// binds the currency record of that code instead of clearing; while no such record is coupled
	// (Business Central keeps LCY in its setup, not among its currencies), Dataverse's currency of
	// that ISO code. Empty: a blank code clears.
	LocalCurrency string

	localRow atomic.Pointer[foundAt] // Dataverse's currency row of LocalCurrency, once found
}

// foundAt is a row found in Dataverse, and when.
type foundAt struct {
	id uuid.UUID
	at time.Time
}

// localRowFor is how long the local currency's row, once found, is bound without asking again:
// every change with a blank currency code would ask otherwise, and the row hardly ever changes.
const localRowFor = 5 * time.Minute

// SkipPolicy is Business Central's skip rule, made smarter: a record that fails the same way
// After times in a row is skipped; its changes are kept but not sent until a person retries it,
// its missing dependency is coupled, or a probe (at most every Probe) finds the cause gone.
// Transient failures never count.
type SkipPolicy struct {
	After int           // 0 never skips
	Probe time.Duration // 0 never probes
}

// DefaultSkipPolicy skips after two identical failures, as Business Central does, and probes a
// skipped record at most every 15 minutes.
var DefaultSkipPolicy = SkipPolicy{After: 2, Probe: 15 * time.Minute}

// Sync applies one event. A non-nil error means nothing final happened and the event must be
// tried again: a transient Dataverse failure (a *Failure with class transient) or a store error.
// Every permanent failure is an Outcome with Result failed.
//
// Lookups are resolved before the record is locked: they read other records' couplings and may
// ask Dataverse, and none of that may wait on a database connection while the record's lock
// holds one. The version is checked again under the lock, and that check decides.
func (s *Syncer) Sync(ctx context.Context, ev ChangeEvent) (Outcome, error) {
	m, ok := s.Mappings.For(ev.Table)
	if !ok {
		f := InvalidEvent(fmt.Sprintf("table %q is not part of the event contract", ev.Table))
		if IsKnownTable(ev.Table) {
			f = MappingMissing(ev.Table)
		}
		return Outcome{Result: ResultFailed, Failure: f}, nil
	}
	cur, err := s.Store.Coupling(ctx, ev.Table, ev.Key)
	if err != nil {
		return Outcome{}, err
	}
	if out, stale := staleOutcome(ev, cur); stale {
		return out, nil
	}
	var (
		prepared Outcome
		attrs    Attributes
		failure  *Failure
		found    *match
	)
	if ev.Type == EventUpserted {
		if attrs, failure, err = s.prepare(ctx, m, ev, &prepared); err != nil {
			return prepared, err
		}
		// A record without a row looks for it by the mapping's match fields before it creates one.
		if failure == nil && !cur.Coupled() && !s.holdBack(ev, cur, nil) {
			if found, err = s.findMatch(ctx, m, ev, attrs, &prepared); err != nil {
				return prepared, err
			}
		}
	}
	var out Outcome
	err = s.Store.UpdateCoupling(ctx, ev.Table, ev.Key, func(ctx context.Context, cur Coupling, lock RecordLock) (Coupling, error) {
		// The store may run the closure again: start from what was prepared each time.
		out = Outcome{Stages: append([]Stage(nil), prepared.Stages...)}
		if o, stale := staleOutcome(ev, cur); stale {
			out = o
			return cur, ErrUnchanged
		}
		if s.holdBack(ev, cur, failure) {
			out.Result, out.Failure = ResultSkipped, RecordSkipped(ev, cur.LastErrorKind, cur.Failures, failure)
			return cur, ErrUnchanged
		}
		cur.LastAttemptAt = s.Now().UTC()
		w := rowWriter{s: s, out: &out, lock: lock}
		switch {
		case ev.Type == EventDeleted:
			return s.applyDelete(ctx, w, m, ev, cur)
		case failure != nil:
			return s.fail(&out, cur, m, failure)
		case found != nil && !cur.Coupled():
			next, handled, err := s.applyMatch(ctx, w, m, ev, cur, attrs, found)
			if handled || err != nil {
				return next, err
			}
		}
		return s.applyUpsert(ctx, w, m, ev, cur, attrs)
	})
	var taken *RowTakenError
	if errors.As(err, &taken) {
		// The store refused the coupling at commit: another record was coupled to the row after
		// this record claimed it (its claim had run out under a stalled worker). Nothing was stored:
		// the record stays without the row, and its change is reported as already_coupled.
		s.stage(&out, "couple", fmt.Sprintf("%s row %s is coupled to %s/%s: the coupling was refused", taken.Entity, taken.Row, taken.Other.Table, taken.Other.Key))
		row := FoundRow{ID: taken.Row, Name: taken.Other.RowName}
		out.Result, out.Failure, out.RowID, out.ResolvesErrors, out.Match = ResultFailed, AlreadyCoupled(ev, m, row, taken.Other), uuid.Nil, false, ""
		return out, nil
	}
	return out, err
}

// holdBack reports whether a change of a skipped record is kept rather than sent. prepared is the
// failure the change's own lookups gave (nil when they all resolved).
func (s *Syncer) holdBack(ev ChangeEvent, cur Coupling, prepared *Failure) bool {
	if !cur.Skipped || ev.Retry {
		return false
	}
	if cur.LastErrorKind == KindDependencyNotCoupled {
		// The dependency's coupling is at hand: the record goes as soon as it is coupled.
		return prepared != nil && prepared.Kind == KindDependencyNotCoupled
	}
	return s.Skip.Probe <= 0 || s.Now().Sub(cur.LastAttemptAt) < s.Skip.Probe
}

// staleOutcome reports whether ev is not newer than the record's last final version.
func staleOutcome(ev ChangeEvent, cur Coupling) (Outcome, bool) {
	if ev.Version > cur.Version {
		return Outcome{}, false
	}
	// A redelivery of the very version that synced: its resolution may not have been published
	// before the worker stopped, so it is published again (idempotently).
	return Outcome{Result: ResultStale, ResolvesErrors: ev.Version == cur.Version && cur.Status == CouplingSynced}, true
}

// prepare maps the event's fields and binds its lookups. A failure is permanent and is recorded
// under the lock; an error is transient.
func (s *Syncer) prepare(ctx context.Context, m Mapping, ev ChangeEvent, out *Outcome) (Attributes, *Failure, error) {
	s.stage(out, "map", fmt.Sprintf("%s -> %s", m.Table, m.Entity))
	attrs, err := m.Attributes(ev.Fields)
	if err != nil {
		return nil, InvalidEvent(err.Error()), nil
	}
	f, err := s.bindLookups(ctx, m, ev, attrs, out)
	return attrs, f, err
}

func (s *Syncer) stage(out *Outcome, name, detail string) {
	out.Stages = append(out.Stages, Stage{Name: name, At: s.Now().UTC(), Detail: detail})
}

// fail records a permanent failure on the outcome and returns the coupling that remembers it.
func (s *Syncer) fail(out *Outcome, cur Coupling, m Mapping, f *Failure) (Coupling, error) {
	out.Result, out.Failure = ResultFailed, f
	if f.Dataverse != nil {
		out.Stages = append(out.Stages, Stage{Name: "dataverse", At: s.Now().UTC(), Detail: f.Dataverse.Error(),
			Request: f.Dataverse.Request, Response: f.Dataverse.Response})
	}
	if cur.LastErrorKind == f.Kind {
		cur.Failures++
	} else {
		cur.Failures = 1
	}
	cur.Entity, cur.Status, cur.LastErrorKind = m.Entity, CouplingFailed, f.Kind
	cur.Skipped = s.Skip.After > 0 && cur.Failures >= s.Skip.After
	return cur, nil
}

// dataverseFailure turns a Dataverse port error into a failure to report, or into the error to
// return from the closure (transient failures and errors that are not Dataverse's).
func (s *Syncer) dataverseFailure(err error) (*Failure, error) {
	if ClassifyDataverse(err) == nil {
		return nil, err
	}
	f := s.Classifier.Classify(err)
	if f.Transient() {
		return nil, f
	}
	return f, nil
}

func (s *Syncer) applyUpsert(ctx context.Context, w rowWriter, m Mapping, ev ChangeEvent, cur Coupling, attrs Attributes) (Coupling, error) {
	out := w.out
	row := cur.RowID
	if row == uuid.Nil {
		row = DeterministicRowID(ev.Table, ev.Key)
	}
	ref := m.Row(row)
	var (
		version string
		err     error
	)
	// The name the row had is known only for the row the record is coupled to.
	name := ""
	if cur.Coupled() {
		name = cur.RowName
	}
	if cur.Coupled() {
		s.stage(out, "dataverse", "update "+named(ref, name))
		version, err = w.update(ctx, ref, attrs, cur.RowVersion)
		if isRowMissing(err, row) {
			switch m.OnDestinationDeleted {
			case ConflictRestore:
				// The record is coupled to the row: no other record can have it, nothing to claim.
				s.stage(out, "dataverse", "restore "+ref.String())
				version, err = w.create(ctx, m, ref, attrs, true)
			case ConflictUncouple:
				out.Result = ResultUncoupled
				return Coupling{Table: ev.Table, Key: ev.Key, Entity: m.Entity, Version: ev.Version, Status: CouplingUncoupled}, nil
			default:
				var dv *DataverseError
				errors.As(err, &dv)
				return s.fail(out, cur, m, DestinationDeleted(ev, m, NamedRow{Entity: m.Entity, ID: row, Name: cur.RowName}, dv))
			}
		}
	} else {
		var taken *RowTakenError
		row, version, taken, err = s.createRow(ctx, w, m, ev, row, attrs)
		if taken != nil {
			return s.alreadyCoupled(w, m, ev, cur, FoundRow{ID: taken.Row}, taken)
		}
	}
	if err != nil {
		f, err := s.dataverseFailure(err)
		if err != nil {
			return cur, err
		}
		return s.fail(out, cur, m, f)
	}
	out.Result, out.RowID = ResultSynced, row
	out.ResolvesErrors = cur.Status == CouplingFailed || cur.LastErrorKind != "" || !cur.Coupled()
	return Coupling{Table: ev.Table, Key: ev.Key, RowID: row, Entity: m.Entity, RowName: m.RowName(attrs, name), RowVersion: version,
		Version: ev.Version, Status: CouplingSynced, LastSyncedAt: s.Now().UTC(), LastAttemptAt: s.Now().UTC()}, nil
}

// maxNewRows bounds how many rows createRow tries for a record whose row other records have.
const maxNewRows = 3

// createRow creates the row of a record without one, starting with row (its deterministic id, or
// the row it had before it was deleted at the source), or adopts the row an earlier attempt
// created. A row another record is coupled to is not the record's any more (a person coupled that
// record to it after this one was uncoupled, or that record's match found it): as Business
// Central creates a new row for a record that is no longer coupled, the record gets a new row,
// whose id is derived from the taken one so that a retry after a crash finds and adopts it. taken
// is the last refusal when maxNewRows rows were all taken: nothing was written.
func (s *Syncer) createRow(ctx context.Context, w rowWriter, m Mapping, ev ChangeEvent, row uuid.UUID, attrs Attributes) (uuid.UUID, string, *RowTakenError, error) {
	for round := 1; ; round++ {
		ref := m.Row(row)
		claimed := s.rowFindable(m, ev, row)
		var (
			version string
			err     error
		)
		if claimed {
			err = w.lock.ClaimRow(ctx, m.Entity, row)
		}
		if err == nil {
			s.stage(w.out, "dataverse", "create "+ref.String())
			version, err = w.create(ctx, m, ref, attrs, claimed)
		}
		var taken *RowTakenError
		if !errors.As(err, &taken) {
			return row, version, nil, err
		}
		if round == maxNewRows {
			return row, "", taken, nil
		}
		next := nextRowID(ev, row)
		s.stage(w.out, "couple", fmt.Sprintf("%s is coupled to %s/%s: %s/%s gets a new row, %s",
			named(ref, taken.Other.RowName), taken.Other.Table, taken.Other.Key, ev.Table, ev.Key, next))
		row = next
	}
}

// nextRowID is the id of the row dvsync creates for a record whose row taken another record has.
func nextRowID(ev ChangeEvent, taken uuid.UUID) uuid.UUID {
	return uuid.NewSHA1(rowNamespace, []byte(ev.Table+"\x00"+ev.Key+"\x00"+taken.String()))
}

// rowFindable reports whether another record could take the row the record is about to create,
// so that the row is claimed before it exists: a row of an entity that a mapping couples by match
// (another record's match, of this mapping or another of the entity, may find it as soon as it is
// created), or one that is not the record's own deterministic id (a row it had before). The
// record's own new row of an entity no mapping matches is found by nobody else; should a person's
// Couple name it meanwhile, the store refuses the later of the two couplings. A row that exists
// already is claimed in any case before it is adopted (rowWriter.create).
func (s *Syncer) rowFindable(m Mapping, ev ChangeEvent, row uuid.UUID) bool {
	if row != DeterministicRowID(ev.Table, ev.Key) {
		return true
	}
	for _, o := range s.Mappings {
		if o.Entity != m.Entity {
			continue
		}
		for _, f := range o.Fields {
			if f.Match != nil {
				return true
			}
		}
	}
	return false
}

// named is a row's reference for the call stack, with its primary name when known.
func named(ref RowRef, name string) string {
	if name == "" {
		return ref.String()
	}
	return fmt.Sprintf("%s %q", ref, name)
}

// rowWriter writes one record's row within its UpdateCoupling closure, holding the record's lock.
type rowWriter struct {
	s    *Syncer
	out  *Outcome
	lock RecordLock
}

// create creates the row. When it exists already, an earlier attempt at this record created it
// (dvsync crashed, or stopped waiting, before recording the coupling), or the record had it
// before it was uncoupled: the row is adopted and updated on the version it has now, once it is
// claimed (unless claimed says it is already). A row another record is coupled to is a
// *RowTakenError, and nothing is written to it.
func (w rowWriter) create(ctx context.Context, m Mapping, ref RowRef, attrs Attributes, claimed bool) (string, error) {
	version, err := w.s.Dataverse.CreateRow(ctx, ref, attrs)
	if !IsAlreadyExists(err) {
		return version, err
	}
	if !claimed {
		if err := w.lock.ClaimRow(ctx, m.Entity, ref.ID); err != nil {
			return "", err
		}
	}
	current, found, err := w.s.Dataverse.RowVersion(ctx, ref)
	if err != nil {
		return "", err
	}
	if err := w.lock.Held(ctx); err != nil {
		return "", err
	}
	if !found { // deleted in the meantime: create it after all
		return w.s.Dataverse.CreateRow(ctx, ref, attrs)
	}
	w.s.stage(w.out, "dataverse", fmt.Sprintf("%s exists already (an earlier attempt created it, or the record had it before): update version %s", ref, current))
	return w.update(ctx, ref, attrs, current)
}

// update updates a row on the version dvsync wrote last (see conditional).
func (w rowWriter) update(ctx context.Context, ref RowRef, attrs Attributes, ifMatch string) (string, error) {
	return w.conditional(ctx, ref, ifMatch, func(ifMatch string) (string, error) {
		return w.s.Dataverse.UpdateRow(ctx, ref, attrs, ifMatch)
	})
}

// maxWriteRounds bounds how often a write is sent again on a row that keeps changing under it;
// then the conflict is reported (update_conflict) for a person to retry.
const maxWriteRounds = 3

// conditional sends a write conditioned on the row's version. A version mismatch means the row
// changed since dvsync's last write: a person edited it in Dataverse, or a write dvsync had given
// up on landed late. dvsync's mappings are one-way, so the source wins, as with Business
// Central's one-way mappings: the row's version is read and the write is sent again on it. Any
// write still on its way is conditioned on an older version and is refused when it lands.
//
// Before it writes again, it checks that it still holds the record: a worker that lost its lock
// (its database connection broke) must not overwrite what the worker now holding the record wrote.
func (w rowWriter) conditional(ctx context.Context, ref RowRef, ifMatch string, write func(ifMatch string) (string, error)) (string, error) {
	for round := 1; ; round++ {
		version, err := write(ifMatch)
		if !IsVersionMismatch(err) || round == maxWriteRounds {
			return version, err
		}
		current, found, err := w.s.Dataverse.RowVersion(ctx, ref)
		if err != nil {
			return "", err
		}
		if err := w.lock.Held(ctx); err != nil {
			return "", err
		}
		if !found {
			current = AnyVersion // deleted in the meantime: the next write says so (404)
		}
		w.s.stage(w.out, "conflict", fmt.Sprintf("%s changed in Dataverse since dvsync's last write (version %s, now %s): overwritten, the mapping is one-way",
			ref, versionText(ifMatch), versionText(current)))
		w.out.Overwrites++
		ifMatch = current
	}
}

func versionText(v string) string {
	if v == AnyVersion {
		return "unknown"
	}
	return v
}

// bindLookups adds an @odata.bind for every lookup field the event carries. A dependency that is
// not coupled is a failure, and nothing is sent to Dataverse.
func (s *Syncer) bindLookups(ctx context.Context, m Mapping, ev ChangeEvent, attrs Attributes, out *Outcome) (*Failure, error) {
	for _, l := range m.Lookups {
		var (
			value string
			local bool // the blank code of the local currency
		)
		if raw, present := ev.Fields[l.Source]; present && (raw == nil || raw == "") {
			if s.LocalCurrency == "" || s.Mappings[l.Table].Entity != CurrencyEntity {
				attrs[l.Bind+"@odata.bind"] = nil // an emptied field clears the lookup
				continue
			}
			value, local = s.LocalCurrency, true
			s.stage(out, "lookup", fmt.Sprintf("%s is blank: the local currency %s", l.Source, value))
		} else {
			v, ok, err := l.LookupValue(ev.Fields)
			if err != nil {
				return InvalidEvent(err.Error()), nil
			}
			if !ok {
				continue
			}
			value = v
		}
		dep, err := s.Store.Coupling(ctx, l.Table, value)
		if err != nil {
			return nil, fmt.Errorf("read coupling of %s/%s: %w", l.Table, value, err)
		}
		depMapping, _ := s.Mappings.For(l.Table)
		if !dep.Coupled() && local {
			target, f, err := s.localCurrencyRow(ctx, ev, l, depMapping, out)
			if f != nil || err != nil {
				return f, err
			}
			attrs[l.Bind+"@odata.bind"] = "/" + target.String()
			continue
		}
		if !dep.Coupled() {
			s.stage(out, "lookup", fmt.Sprintf("%s %s: %s/%s is not coupled", l.Source, value, l.Table, value))
			return DependencyNotCoupled(ev, l, value), nil
		}
		target := depMapping.Row(dep.RowID)
		if q := l.Query; q != nil {
			filter := strings.ReplaceAll(q.Filter, "{rowId}", dep.RowID.String())
			id, found, err := s.Dataverse.FindRowID(ctx, q.EntitySet, q.IDAttribute, filter)
			if err != nil {
				return s.dataverseFailure(err)
			}
			if !found {
				s.stage(out, "lookup", fmt.Sprintf("%s?$filter=%s found no row", q.EntitySet, filter))
				f := DependencyNotCoupled(ev, l, value)
				f.Message = fmt.Sprintf("%s cannot be synchronized: %s %s is coupled, but Dataverse has no %s row for it (%s).",
					ev.Ref(), l.caption(), value, q.EntitySet, filter)
				return f, nil
			}
			target = RowRef{EntitySet: q.EntitySet, ID: id}
		}
		s.stage(out, "lookup", fmt.Sprintf("%s %s -> %s", l.Source, value, named(target, dep.RowName)))
		attrs[l.Bind+"@odata.bind"] = "/" + target.String()
	}
	return nil, nil
}

// localCurrencyRow is Dataverse's currency of the local currency's ISO code, for a blank currency
// code while no currency record of the local currency is coupled, as Business Central binds its
// LCY. A Dataverse without one is a dependency_not_coupled failure.
func (s *Syncer) localCurrencyRow(ctx context.Context, ev ChangeEvent, l Lookup, cur Mapping, out *Outcome) (RowRef, *Failure, error) {
	if c := s.localRow.Load(); c != nil && s.Now().Sub(c.at) < localRowFor {
		s.stage(out, "lookup", fmt.Sprintf("%s %s -> %s (the local currency)", l.Source, s.LocalCurrency, cur.Row(c.id)))
		return cur.Row(c.id), nil, nil
	}
	filter := fmt.Sprintf("isocurrencycode eq '%s'", strings.ReplaceAll(s.LocalCurrency, "'", "''"))
	id, found, err := s.Dataverse.FindRowID(ctx, cur.EntitySet, cur.PrimaryID, filter)
	if err != nil {
		f, err := s.dataverseFailure(err)
		return RowRef{}, f, err
	}
	if !found {
		s.stage(out, "lookup", fmt.Sprintf("%s?$filter=%s found no row", cur.EntitySet, filter))
		f := DependencyNotCoupled(ev, l, s.LocalCurrency)
		f.Message = fmt.Sprintf("%s cannot be synchronized: its %s is blank, the local currency %s, but no %s record %s is coupled and "+
			"Dataverse has no currency with the ISO code %s.", ev.Ref(), l.caption(), s.LocalCurrency, cur.Table, s.LocalCurrency, s.LocalCurrency)
		return RowRef{}, f, nil
	}
	s.localRow.Store(&foundAt{id: id, at: s.Now()})
	s.stage(out, "lookup", fmt.Sprintf("%s %s -> %s (the local currency, found by %s)", l.Source, s.LocalCurrency, cur.Row(id), filter))
	return cur.Row(id), nil, nil
}

// isRowMissing reports whether err says that this row (not a row a lookup binds) does not exist.
func isRowMissing(err error, row uuid.UUID) bool {
	var dv *DataverseError
	if !errors.As(err, &dv) || dv.Status != 404 {
		return false
	}
	return strings.Contains(strings.ToLower(dv.Message), row.String())
}

// deactivation is the state Dataverse's activatable tables take when deactivated.
var deactivation = Attributes{"statecode": 1, "statuscode": 2}

func (s *Syncer) applyDelete(ctx context.Context, w rowWriter, m Mapping, ev ChangeEvent, cur Coupling) (Coupling, error) {
	out := w.out
	deleted := Coupling{Table: ev.Table, Key: ev.Key, RowID: cur.RowID, Entity: m.Entity, RowName: cur.RowName, Version: ev.Version,
		Status: CouplingDeleted, LastSyncedAt: s.Now().UTC()}
	out.Result = ResultDeleted
	if !cur.Coupled() {
		return deleted, nil // nothing in Dataverse; the version keeps older upserts out
	}
	row := m.Row(cur.RowID)
	var err error
	switch m.OnDelete {
	case DeleteRow:
		s.stage(out, "dataverse", "delete "+named(row, cur.RowName))
		_, err = w.conditional(ctx, row, cur.RowVersion, func(ifMatch string) (string, error) {
			return "", s.Dataverse.DeleteRow(ctx, row, ifMatch)
		})
	case DeleteDeactivate:
		s.stage(out, "dataverse", "deactivate "+named(row, cur.RowName))
		deleted.RowVersion, err = w.update(ctx, row, deactivation, cur.RowVersion)
	case DeleteUncouple:
		out.Result = ResultUncoupled
		deleted.Status, deleted.RowID, deleted.RowName = CouplingUncoupled, uuid.Nil, ""
		return deleted, nil
	case DeleteReport:
		return s.fail(out, cur, m, SourceDeleted(ev, m, NamedRow{Entity: m.Entity, ID: cur.RowID, Name: cur.RowName}))
	}
	if err != nil && !isRowMissing(err, cur.RowID) { // already gone in Dataverse is what we wanted
		f, err := s.dataverseFailure(err)
		if err != nil {
			return cur, err
		}
		return s.fail(out, cur, m, f)
	}
	return deleted, nil
}
