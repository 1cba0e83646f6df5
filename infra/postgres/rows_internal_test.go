package postgres

import (
	"context"
	"errors"
	"testing"

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
