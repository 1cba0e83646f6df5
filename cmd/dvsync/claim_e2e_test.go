package main

import (
	"context"
	"fmt"
	"net/url"
	"testing"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/storage"
)

// Two customers with the same account number, published together and synced by several lanes of
// two workers, match the same existing account at the same moment (their lookups go to Dataverse
// together): one is coupled to it, the other gets already_coupled naming the first, and no
// account is created. Several pairs at once, so that the lanes and workers really race.
func TestTwoRecordsMatchingOneRowAtOnceCoupleOnlyOne(t *testing.T) {
	h := startWith(t, options{workers: 2, tweak: func(c *Config) { c.Worker.Lanes = 8 }})
	const pairs = 6
	type pair struct {
		keys [2]string
		row  uuid.UUID
	}
	ps := make([]pair, pairs)
	for i := range ps {
		number := h.key(fmt.Sprintf("N%d", i))
		ps[i] = pair{keys: [2]string{h.key(fmt.Sprintf("P%dA", i)), h.key(fmt.Sprintf("P%dB", i))},
			row: h.existing("accounts", domain.Attributes{"accountnumber": number, "name": "Shared " + number})}
	}
	accounts := h.rowCount("accounts")
	for i, p := range ps {
		for _, k := range p.keys {
			h.publish("customer", k, 1, map[string]any{"number": h.key(fmt.Sprintf("N%d", i)), "displayName": "Customer " + k})
		}
	}
	for _, p := range ps {
		var winner, loser string
		h.eventually(fmt.Sprintf("one of %v coupled, the other already_coupled", p.keys), func() bool {
			for i, k := range p.keys {
				other := p.keys[1-i]
				// The loser's error can be stored before the worker has recorded the loser's
				// state: both are waited for.
				if h.coupling("customer", k).Coupled() && alreadyCoupledTo(h, other, k) &&
					h.coupling("customer", other).LastErrorKind == domain.KindAlreadyCoupled {
					winner, loser = k, other
					return true
				}
			}
			return false
		})
		if c := h.coupling("customer", winner); c.RowID != p.row {
			t.Fatalf("customer/%s coupled to %s, want the existing account %s", winner, c.RowID, p.row)
		}
		if c := h.coupling("customer", loser); c.Coupled() || c.LastErrorKind != domain.KindAlreadyCoupled {
			t.Fatalf("customer/%s = %+v; want uncoupled, already_coupled", loser, c)
		}
		if got, err := h.store.CouplingOfRow(context.Background(), "account", p.row); err != nil || got.Key != winner {
			t.Fatalf("the account's coupling: %+v, %v; want customer/%s only", got, err, winner)
		}
	}
	if n := h.rowCount("accounts"); n != accounts {
		t.Fatalf("%d accounts, want %d: a matched row is not created again", n, accounts)
	}
	var n int
	list, err := h.store.ListCouplings(context.Background(), storage.CouplingFilter{Table: "customer", Text: h.key("P"), Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range list {
		if c.Coupled() {
			n++
		}
	}
	if n != pairs {
		t.Fatalf("%d customers coupled, want one per account (%d)", n, pairs)
	}
}

// alreadyCoupledTo reports whether the record's open error is already_coupled, naming winner.
func alreadyCoupledTo(h *harness, key, winner string) bool {
	list, err := h.store.ListErrors(context.Background(), storage.ErrorFilter{Table: "customer", Key: key, Kind: domain.KindAlreadyCoupled, Status: storage.ErrorOpen})
	if err != nil {
		h.t.Fatal(err)
	}
	for _, e := range list {
		if e.Key == key && e.Details["coupled_key"] == winner {
			return true
		}
	}
	return false
}

// A record uncoupled from its row, whose row a person then couples to another record: the
// record's next change does not take the row back (its create meets the row and would adopt it),
// so the other record's row keeps its data and its coupling; the record gets a new row. A unit of
// measure: its mapping couples by no match, so only the create meets the row.
func TestAnUncoupledRecordsNextChangeLeavesTheRowAPersonCoupledElsewhere(t *testing.T) {
	h := start(t, 1)
	base := h.api()
	v, c := h.key("V"), h.key("C")
	h.publish("unitOfMeasure", v, 1, map[string]any{"code": v, "displayName": "V's unit"})
	row := h.waitCoupled("unitOfMeasure", v, 1).RowID
	path := func(key, action string) string {
		return base + "/api/v1/couplings/unitOfMeasure/" + url.PathEscape(key) + "/" + action
	}
	if st := call(t, "POST", path(v, "uncouple"), testOperatorToken, nil, nil); st != 200 {
		t.Fatalf("uncouple %s: status %d", v, st)
	}
	if st := call(t, "POST", path(c, "couple"), testOperatorToken, map[string]any{"row_id": row.String()}, nil); st != 200 {
		t.Fatalf("couple %s to %s: status %d", c, row, st)
	}
	h.publish("unitOfMeasure", c, 1, map[string]any{"code": c, "displayName": "C's unit, on V's old row"})
	if cc := h.waitCoupled("unitOfMeasure", c, 1); cc.RowID != row {
		t.Fatalf("unitOfMeasure/%s coupled to %s, want %s", c, cc.RowID, row)
	}

	h.publish("unitOfMeasure", v, 2, map[string]any{"code": v, "displayName": "V again"})
	got := h.waitCoupled("unitOfMeasure", v, 2)
	if got.RowID == row {
		t.Fatalf("unitOfMeasure/%s coupled to %s again; want a new row (its old one is %s's)", v, got.RowID, c)
	}
	if r := h.row("uomschedules", row); r == nil || r["description"] != "C's unit, on V's old row" {
		t.Fatalf("the row coupled to %s: %v; want C's data", c, r)
	}
	if r := h.row("uomschedules", got.RowID); r == nil || r["description"] != "V again" {
		t.Fatalf("the new row of %s: %v", v, r)
	}
	if cc := h.coupling("unitOfMeasure", c); !cc.Coupled() || cc.RowID != row {
		t.Fatalf("unitOfMeasure/%s = %+v; want coupled to %s still", c, cc, row)
	}
}
