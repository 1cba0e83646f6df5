package postgres

import (
	"context"
	"errors"
	"sort"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/postgres/pgtest"
)

// A batch of commits of which one couples a row another record has: the unique index refuses the
// statement, and the batch is stored item by item, so that only that record fails (as
// already_coupled, naming the other) and the others are stored and released.
func TestACommitBatchFailsOnlyTheRecordCouplingATakenRow(t *testing.T) {
	ctx := context.Background()
	url, drop, err := pgtest.Database("rows")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(drop)
	s, err := Open(ctx, url, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	taken := uuid.New()
	couple := func(key string, row uuid.UUID) domain.Coupling {
		return domain.Coupling{Table: "customer", Key: key, RowID: row, Entity: "account", Status: domain.CouplingSynced, Version: 1}
	}
	if err := s.UpdateCoupling(ctx, "customer", "A", func(context.Context, domain.Coupling, domain.RecordLock) (domain.Coupling, error) {
		return couple("A", taken), nil
	}); err != nil {
		t.Fatal(err)
	}
	var commits []commit
	for _, k := range []string{"B", "C", "D"} {
		c, _, err := s.claimRecord(ctx, "customer", k)
		if err != nil {
			t.Fatal(err)
		}
		defer c.io.drop(c)
		row := uuid.New()
		if k == "B" {
			row = taken
		}
		next := couple(k, row)
		commits = append(commits, commit{claim: c, next: &next})
	}
	outs, errs := s.couplingIO().commitBatch(ctx, commits)
	var rt *domain.RowTakenError
	if !errors.As(errs[0], &rt) || rt.Other.Key != "A" || rt.Row != taken {
		t.Fatalf("the commit of a taken row: %v, want a RowTakenError naming customer/A", errs[0])
	}
	for i, k := range []string{"C", "D"} {
		if errs[i+1] != nil || !outs[i+1] {
			t.Fatalf("customer/%s in the same batch: %v, stored %v; want stored", k, errs[i+1], outs[i+1])
		}
		if c, _ := s.Coupling(ctx, "customer", k); !c.Coupled() {
			t.Fatalf("customer/%s = %+v; want coupled", k, c)
		}
	}
	if c, _ := s.Coupling(ctx, "customer", "B"); c.Exists {
		t.Fatalf("customer/B = %+v; the refused coupling is not stored", c)
	}
}

// Two commit batches that couple the same rows in a different order of their records' keys: the
// unique index makes the second wait on the first at each row, so the batches write their rows in
// row order, and the second finds the rows taken (already_coupled) instead of a deadlock failing
// a whole batch. A third transaction holding one row makes the first wait midway, so that the
// second has begun when the first goes on.
func TestCommitBatchesCouplingTheSameRowsDoNotDeadlock(t *testing.T) {
	ctx := context.Background()
	url, drop, err := pgtest.Database("rows_order")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(drop)
	s, err := Open(ctx, url, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r1, r2, held := uuid.MustParse("10000000-0000-4000-8000-000000000000"), uuid.MustParse("20000000-0000-4000-8000-000000000000"),
		uuid.MustParse("30000000-0000-4000-8000-000000000000")
	batch := func(rows map[string]uuid.UUID) []commit {
		var cs []commit
		for _, k := range sortedKeys(rows) {
			c, _, err := s.claimRecord(ctx, "customer", k)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.io.drop(c) })
			next := domain.Coupling{Table: "customer", Key: k, RowID: rows[k], Entity: "account", Status: domain.CouplingSynced, Version: 1}
			cs = append(cs, commit{claim: c, next: &next})
		}
		return cs
	}
	// In key order the first couples r2, then the held row, then r1; the second r1, then r2.
	first := batch(map[string]uuid.UUID{"A1": r2, "A2": held, "A3": r1})
	second := batch(map[string]uuid.UUID{"B1": r1, "B2": r2})

	blocker, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = blocker.Rollback(ctx) }()
	if _, err := blocker.Exec(ctx, `INSERT INTO couplings (table_name, source_key, row_id, entity, version, status, updated_at)
		VALUES ('customer', 'Z', $1, 'account', 1, 'synced', now())`, held); err != nil {
		t.Fatal(err)
	}
	type result struct {
		outs []bool
		errs []error
	}
	results := make([]chan result, 2)
	waiting := func(n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			var got int
			if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d commit statements waiting on a lock, want %d", got, n)
			}
			<-time.After(5 * time.Millisecond) // polled with a deadline, not slept on
		}
	}
	for i, cs := range [][]commit{first, second} {
		results[i] = make(chan result, 1)
		go func() {
			outs, errs := s.couplingIO().commitEach(ctx, cs)
			results[i] <- result{outs, errs}
		}()
		waiting(i + 1)
	}
	if err := blocker.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	a, b := <-results[0], <-results[1]
	for i, err := range a.errs {
		if err != nil || !a.outs[i] {
			t.Fatalf("the first batch's item %d: %v, stored %v; want stored", i, err, a.outs[i])
		}
	}
	for i, err := range b.errs {
		if !isRowTaken(err) {
			t.Fatalf("the second batch's item %d: %v; want the unique index's refusal, not a deadlock", i, err)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
