package storagetest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/storage"
)

// A coupling's row name comes back from every read (the record's own, a batch of them, the
// coupled-records list, CouplingOfRow), is stored by a person's edit, and is each record's own
// when many are written at once.
func testRowNameRoundTrips(t *testing.T, h Harness) {
	s := h.Open(t, 0)
	ctx := context.Background()
	tag := uuid.NewString()[:8]
	key, row := "N"+tag, uuid.New()
	put := func(key, name string, row uuid.UUID) {
		t.Helper()
		if err := s.UpdateCoupling(ctx, "customer", key, func(_ context.Context, cur domain.Coupling, _ domain.RecordLock) (domain.Coupling, error) {
			if cur.Exists && cur.RowName == "" {
				t.Errorf("%s came to its update without its row name: %+v", key, cur)
			}
			return domain.Coupling{Table: "customer", Key: key, RowID: row, Entity: "account", RowName: name, Version: 1,
				Status: domain.CouplingSynced}, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	put(key, "Adatum Corporation", row)
	if c, err := s.Coupling(ctx, "customer", key); err != nil || c.RowName != "Adatum Corporation" {
		t.Fatalf("Coupling = %+v, %v; want the row name", c, err)
	}
	put(key, "Adatum Corp.", row) // the update checks the claim's read carries the name
	if c, err := s.CouplingOfRow(ctx, "account", row); err != nil || c.RowName != "Adatum Corp." {
		t.Fatalf("CouplingOfRow = %+v, %v; want the new row name", c, err)
	}
	list, err := s.ListCouplings(ctx, storage.CouplingFilter{Table: "customer", Text: key, Limit: 10})
	if err != nil || len(list) != 1 || list[0].RowName != "Adatum Corp." {
		t.Fatalf("ListCouplings = %+v, %v; want the record with its row name", list, err)
	}

	// A person's edit stores the name it is given, and an uncouple that clears it clears it.
	if err := s.EditCoupling(ctx, "customer", key, "ada", "uncouple", func(_ context.Context, cur domain.Coupling) (storage.CouplingEdit, error) {
		if cur.RowName != "Adatum Corp." {
			t.Errorf("the edit came without the row name: %+v", cur)
		}
		next := cur
		next.RowID, next.RowName, next.Status = uuid.Nil, "", domain.CouplingUncoupled
		return storage.CouplingEdit{Next: &next, Target: "customer/" + key}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if c, _ := s.Coupling(ctx, "customer", key); c.RowName != "" {
		t.Fatalf("after the uncouple the row name is %q", c.RowName)
	}
	if err := s.EditCoupling(ctx, "customer", key, "ada", "couple", func(_ context.Context, cur domain.Coupling) (storage.CouplingEdit, error) {
		next := cur
		next.RowID, next.RowName, next.Status = row, "Contoso", domain.CouplingSynced
		return storage.CouplingEdit{Next: &next, Target: "customer/" + key}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if c, _ := s.Coupling(ctx, "customer", key); c.RowName != "Contoso" {
		t.Fatalf("after the couple the row name is %q", c.RowName)
	}

	// Hostile names are stored cleaned and bounded, not refused.
	hostile := "A\x00B\xffC" + strings.Repeat("é", 4000)
	put("H"+tag, hostile, uuid.New())
	if c, err := s.Coupling(ctx, "customer", "H"+tag); err != nil || !utf8.ValidString(c.RowName) || strings.ContainsRune(c.RowName, 0) ||
		!strings.HasPrefix(c.RowName, "A\uFFFDB\uFFFDC") || len(c.RowName) > storage.IDMax {
		t.Fatalf("a hostile row name came back as %q (%d bytes), %v", c.RowName, len(c.RowName), err)
	}

	// Many records at once (one batch, where the store batches) each keep their own name.
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			put(fmt.Sprintf("B%s-%d", tag, i), fmt.Sprintf("Name %d", i), uuid.New())
		}()
	}
	wg.Wait()
	for i := range 40 {
		if c, err := s.Coupling(ctx, "customer", fmt.Sprintf("B%s-%d", tag, i)); err != nil || c.RowName != fmt.Sprintf("Name %d", i) {
			t.Fatalf("record %d: %+v, %v; want its own row name", i, c, err)
		}
	}
}
