package storagetest

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
)

// CouplingOfRow finds the record a row is coupled to while the coupling is live, and no record
// once it is deleted or uncoupled, or for a row of another entity.
func testCouplingOfRowFindsTheLiveCoupling(t *testing.T, h Harness) {
	s := h.Open(t, 0)
	ctx := context.Background()
	row, key := uuid.New(), "M"+uuid.NewString()[:8]
	if c, err := s.CouplingOfRow(ctx, "account", row); err != nil || c.Exists {
		t.Fatalf("coupling of an unknown row = %+v, %v", c, err)
	}
	put := func(c domain.Coupling) {
		t.Helper()
		if err := s.UpdateCoupling(ctx, "customer", key, func(context.Context, domain.Coupling, domain.RecordLock) (domain.Coupling, error) {
			return c, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	put(domain.Coupling{Table: "customer", Key: key, RowID: row, Entity: "account", Version: 3, Status: domain.CouplingSynced, LastSyncedAt: time.Now()})
	c, err := s.CouplingOfRow(ctx, "account", row)
	if err != nil || !c.Exists || c.Table != "customer" || c.Key != key || c.RowID != row || c.Version != 3 {
		t.Fatalf("coupling of row = %+v, %v; want customer/%s", c, err, key)
	}
	if c, err := s.CouplingOfRow(ctx, "contact", row); err != nil || c.Exists {
		t.Fatalf("coupling of the id in another entity = %+v, %v", c, err)
	}
	put(domain.Coupling{Table: "customer", Key: key, RowID: row, Entity: "account", Version: 3, Status: domain.CouplingFailed, LastErrorKind: domain.KindInvalidData})
	if c, err := s.CouplingOfRow(ctx, "account", row); err != nil || !c.Exists || c.Key != key {
		t.Fatalf("a failed coupling is live: %+v, %v", c, err)
	}
	put(domain.Coupling{Table: "customer", Key: key, RowID: row, Entity: "account", Version: 4, Status: domain.CouplingDeleted})
	if c, err := s.CouplingOfRow(ctx, "account", row); err != nil || c.Exists {
		t.Fatalf("coupling of a row whose record was deleted = %+v, %v", c, err)
	}
}
