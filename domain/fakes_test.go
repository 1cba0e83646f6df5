package domain_test

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
)

// memStore is an in-memory CouplingStore for unit tests; PostgreSQL's is tested against a real
// database in infra/postgres.
type memStore struct {
	mu       sync.Mutex
	rows     map[string]domain.Coupling
	lockLost error // what Held answers
	// rowClaims are the rows claimed by records in flight (entity/row -> table/key), as a
	// store's row claims; a test adds one to stand for another worker's sync under way.
	rowClaims map[string]string
	// claimed counts the rows claimed, by entity/row.
	claimed map[string]int
	// beforeCommit, when set, runs after an update and before what it returned is stored.
	beforeCommit func()
}

func newMemStore() *memStore {
	return &memStore{rows: map[string]domain.Coupling{}, rowClaims: map[string]string{}, claimed: map[string]int{}}
}

// memLock is a memStore's hold on one record.
type memLock struct {
	s          *memStore
	table, key string
}

// Held is held unless a test says the lock was lost.
func (l memLock) Held(context.Context) error { return l.s.lockLost }

// ClaimRow claims the row as the stores do: taken when another record is coupled to it, busy
// when another record claimed it.
func (l memLock) ClaimRow(_ context.Context, entity string, row uuid.UUID) error {
	s := l.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lockLost != nil {
		return s.lockLost
	}
	id, me := entity+"/"+row.String(), l.table+"/"+l.key
	if other := s.coupledTo(entity, row, me); other != nil {
		return &domain.RowTakenError{Entity: entity, Row: row, Other: *other}
	}
	if holder, ok := s.rowClaims[id]; ok && holder != me {
		return domain.ErrRowBusy
	}
	s.rowClaims[id] = me
	s.claimed[id]++
	return nil
}

// coupledTo is the record other than me coupled to the row; s.mu is held.
func (s *memStore) coupledTo(entity string, row uuid.UUID, me string) *domain.Coupling {
	for k, c := range s.rows {
		if k != me && c.Entity == entity && c.RowID == row && c.Coupled() {
			return &c
		}
	}
	return nil
}

func (s *memStore) Coupling(_ context.Context, table, key string) (domain.Coupling, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.rows[table+"/"+key]; ok {
		return c, nil
	}
	return domain.Coupling{Table: table, Key: key, Version: domain.NoVersion}, nil
}

func (s *memStore) UpdateCoupling(ctx context.Context, table, key string, update func(context.Context, domain.Coupling, domain.RecordLock) (domain.Coupling, error)) error {
	cur, _ := s.Coupling(ctx, table, key)
	next, err := update(ctx, cur, memLock{s: s, table: table, key: key})
	if s.beforeCommit != nil {
		s.beforeCommit()
	}
	me := table + "/" + key
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, holder := range s.rowClaims { // dropped with the commit or release
		if holder == me {
			delete(s.rowClaims, id)
		}
	}
	if errors.Is(err, domain.ErrUnchanged) {
		return nil
	}
	if err != nil {
		return err
	}
	// The stores' unique index on live couplings of a row.
	if other := s.coupledTo(next.Entity, next.RowID, me); next.Coupled() && other != nil {
		return &domain.RowTakenError{Entity: next.Entity, Row: next.RowID, Other: *other}
	}
	next.Exists = true
	s.rows[me] = next
	return nil
}

// call is one request the sync made of Dataverse.
type call struct {
	op      string
	row     domain.RowRef
	attrs   domain.Attributes
	ifMatch string
}

// recorder is a Dataverse that records calls and answers with the next queued error, if any.
// Every successful write gives the row a new version, W/"1", W/"2", ...
type recorder struct {
	calls    []call
	errs     []error
	found    uuid.UUID
	versions int
	matches  map[string][]domain.FoundRow              // by entity set, what FindRows answers
	find     func(domain.MatchQuery) []domain.FoundRow // when set, answers FindRows instead
}

func (r *recorder) nextVersion() string {
	r.versions++
	return fmt.Sprintf(`W/"%d"`, r.versions)
}

func (r *recorder) answer(c call) error {
	r.calls = append(r.calls, c)
	if len(r.errs) == 0 {
		return nil
	}
	err := r.errs[0]
	r.errs = r.errs[1:]
	return err
}

func (r *recorder) CreateRow(_ context.Context, row domain.RowRef, a domain.Attributes) (string, error) {
	if err := r.answer(call{op: "create", row: row, attrs: a}); err != nil {
		return "", err
	}
	return r.nextVersion(), nil
}
func (r *recorder) UpdateRow(_ context.Context, row domain.RowRef, a domain.Attributes, ifMatch string) (string, error) {
	if err := r.answer(call{op: "update", row: row, attrs: a, ifMatch: ifMatch}); err != nil {
		return "", err
	}
	return r.nextVersion(), nil
}
func (r *recorder) DeleteRow(_ context.Context, row domain.RowRef, ifMatch string) error {
	return r.answer(call{op: "delete", row: row, ifMatch: ifMatch})
}
func (r *recorder) RowVersion(_ context.Context, row domain.RowRef) (string, bool, error) {
	err := r.answer(call{op: "version", row: row})
	return fmt.Sprintf(`W/"%d"`, r.versions), err == nil, err
}
func (r *recorder) FindRowID(_ context.Context, set, _, filter string) (uuid.UUID, bool, error) {
	err := r.answer(call{op: "find", row: domain.RowRef{EntitySet: set}, attrs: domain.Attributes{"filter": filter}})
	return r.found, r.found != uuid.Nil, err
}

// CouplingOfRow scans the couplings for a live one of the row.
func (s *memStore) CouplingOfRow(_ context.Context, entity string, row uuid.UUID) (domain.Coupling, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.rows {
		if c.Entity == entity && c.RowID == row && c.Coupled() {
			return c, nil
		}
	}
	return domain.Coupling{Version: domain.NoVersion}, nil
}

// FindRows answers with the rows the test put in matches for the entity set (all of them, as if
// each matched), and records the call.
func (r *recorder) FindRows(_ context.Context, q domain.MatchQuery) ([]domain.FoundRow, error) {
	attrs := domain.Attributes{}
	for _, v := range q.Values {
		attrs[v.Attribute] = v.Value
	}
	if err := r.answer(call{op: "match", row: domain.RowRef{EntitySet: q.EntitySet}, attrs: attrs}); err != nil {
		return nil, err
	}
	if r.find != nil {
		return r.find(q), nil
	}
	return r.matches[q.EntitySet], nil
}
