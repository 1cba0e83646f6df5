package dataverse_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/dataverse"
)

func accountQuery(number string) domain.MatchQuery {
	return domain.MatchQuery{EntitySet: "accounts", IDAttribute: "accountid", NameAttribute: "name", Top: 5,
		Values: []domain.MatchValue{{Attribute: "accountnumber", Value: number}}}
}

// Lookups of many records made at the same time go to Dataverse as one $batch, each answered
// with its own rows: none, one (with its name and version), or several; text without regard to
// case, quotes escaped.
func TestFindRowsOfManyRecordsShareABatch(t *testing.T) {
	p := newPool(t)
	single := p.clients[0]
	ctx := context.Background()
	one, twinA, twinB := accountRef(), accountRef(), accountRef()
	for _, r := range []struct {
		row          domain.RowRef
		number, name string
	}{{one, "C10000", "Adatum"}, {twinA, "C'20000", "Trey A"}, {twinB, "c'20000", "Trey B"}} {
		if _, err := single.CreateRow(ctx, r.row, domain.Attributes{"accountnumber": r.number, "name": r.name}); err != nil {
			t.Fatal(err)
		}
	}
	var (
		mu      sync.Mutex
		batches []int
	)
	b := p.batched(t, dataverse.BatchConfig{Linger: 200 * time.Millisecond, OnBatch: func(_, _ string, calls int) {
		mu.Lock()
		defer mu.Unlock()
		batches = append(batches, calls)
	}})
	before := p.counts[0].get("GET accounts")
	const n = 12
	got := make([][]domain.FoundRow, n)
	errs := make([]error, n)
	var calls []func()
	for i := 0; i < n; i++ {
		number := fmt.Sprintf("NONE%d", i)
		switch i {
		case 0:
			number = "C10000"
		case 1:
			number = "C'20000"
		}
		calls = append(calls, func() { got[i], errs[i] = b.FindRows(ctx, accountQuery(number)) })
	}
	together(calls...)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("lookup %d: %v", i, err)
		}
	}
	if len(got[0]) != 1 || got[0][0].ID != one.ID || got[0][0].Name != "Adatum" || got[0][0].Version == "" ||
		got[0][0].Values["accountnumber"] != "C10000" {
		t.Fatalf("lookup of C10000 = %+v", got[0])
	}
	ids := map[uuid.UUID]bool{}
	for _, r := range got[1] {
		ids[r.ID] = true
	}
	if len(got[1]) != 2 || !ids[twinA.ID] || !ids[twinB.ID] {
		t.Fatalf("lookup of C'20000 = %+v; want both accounts (Dataverse does not regard case)", got[1])
	}
	for i := 2; i < n; i++ {
		if len(got[i]) != 0 {
			t.Fatalf("lookup %d = %+v; want none", i, got[i])
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if sent := p.counts[0].get("POST $batch"); sent == 0 || sent > 2 || p.counts[0].get("GET accounts") != before {
		t.Fatalf("%d $batch requests and %d single GETs (batches %v); want the lookups batched", sent, p.counts[0].get("GET accounts")-before, batches)
	}
	// Alone it is a single GET, and the client sends the same.
	if rows, err := single.FindRows(ctx, accountQuery("C10000")); err != nil || len(rows) != 1 || rows[0].ID != one.ID {
		t.Fatalf("single lookup = %+v, %v", rows, err)
	}
	if _, err := single.FindRows(ctx, domain.MatchQuery{EntitySet: "accounts", IDAttribute: "accountid"}); err == nil {
		t.Fatal("a lookup without values must be refused")
	}
}

func TestLiteral(t *testing.T) {
	for v, want := range map[any]string{"O'Neil": "'O''Neil'", int64(3): "3", 2.5: "2.5", true: "true"} {
		if got, err := dataverse.Literal(v); err != nil || got != want {
			t.Errorf("Literal(%v) = %q, %v; want %q", v, got, err, want)
		}
	}
	if _, err := dataverse.Literal([]int{1}); err == nil {
		t.Error("a slice has no literal")
	}
}
