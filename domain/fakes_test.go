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
}

func newMemStore() *memStore { return &memStore{rows: map[string]domain.Coupling{}} }

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
	next, err := update(ctx, cur, s)
	if errors.Is(err, domain.ErrUnchanged) {
		return nil
	}
	if err != nil {
		return err
	}
	next.Exists = true
	s.mu.Lock()
	s.rows[table+"/"+key] = next
	s.mu.Unlock()
	return nil
}

// Held is the memStore's lock: held unless a test says it was lost.
func (s *memStore) Held(context.Context) error { return s.lockLost }

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
