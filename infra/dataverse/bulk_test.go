package dataverse_test

import (
	"context"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/dataverse"
	"github.com/dvsync/dvsync/infra/emulator"
)

var accounts = dataverse.Table{LogicalName: "account", EntitySet: "accounts", PrimaryID: "accountid"}

func TestCreateMultipleInOneCall(t *testing.T) {
	c, h := countedClient(t)
	targets := []dataverse.Target{{Attrs: domain.Attributes{"name": "A"}}, {Attrs: domain.Attributes{"name": "B"}}}
	ids, errs := c.CreateMultiple(context.Background(), accounts, targets)
	for i := range targets {
		if errs[i] != nil || ids[i] == uuid.Nil || h.emu.Row("accounts", ids[i])["name"] != targets[i].Attrs["name"] {
			t.Fatalf("target %d: id %s err %v", i, ids[i], errs[i])
		}
	}
	if h.apiReq.Load() != 1 {
		t.Fatalf("%d requests, want one bulk call", h.apiReq.Load())
	}
}

// One bad record among eight: the transactional call fails whole, the client bisects, and every
// other record is written with the bad one's error standing alone.
func TestUpsertMultipleFindsTheFailingRecord(t *testing.T) {
	c, h := countedClient(t)
	targets := make([]dataverse.Target, 8)
	for i := range targets {
		targets[i] = dataverse.Target{ID: uuid.New(), Attrs: domain.Attributes{"name": "Account " + string(rune('A'+i))}}
	}
	targets[5].Attrs["name"] = strings.Repeat("x", 161)
	errs := c.UpsertMultiple(context.Background(), accounts, targets)
	for i, err := range errs {
		if i == 5 {
			if f := domain.ClassifyDataverse(err); f == nil || f.Kind != domain.KindInvalidData {
				t.Fatalf("the bad record's error: %v", err)
			}
			continue
		}
		if err != nil || h.emu.Row("accounts", targets[i].ID) == nil {
			t.Fatalf("record %d: %v (row written: %v)", i, err, h.emu.Row("accounts", targets[i].ID) != nil)
		}
	}
	if n := h.apiReq.Load(); n > 7 {
		t.Fatalf("%d calls for one bad record in eight; bisection should need at most 7", n)
	}
	// A second run updates the same rows: upsert by id.
	targets[5].Attrs["name"] = "Fixed"
	if errs := c.UpsertMultiple(context.Background(), accounts, targets); errs[5] != nil {
		t.Fatal(errs[5])
	}
	rows, _ := h.emu.Rows("accounts")
	if len(rows) != 8 {
		t.Fatalf("%d rows after upserting the same 8 records twice", len(rows))
	}
}

func TestTransientBulkFailureIsNotBisected(t *testing.T) {
	c, h := countedClient(t)
	if err := h.emu.InjectFault(emulator.Fault{Kind: "status", Status: 503, Count: 1}); err != nil {
		t.Fatal(err)
	}
	targets := []dataverse.Target{{ID: uuid.New(), Attrs: domain.Attributes{"name": "A"}}, {ID: uuid.New(), Attrs: domain.Attributes{"name": "B"}}}
	errs := c.UpsertMultiple(context.Background(), accounts, targets)
	for _, err := range errs {
		if f := domain.ClassifyDataverse(err); f == nil || !f.Transient() {
			t.Fatalf("err = %v, want the transient failure for every target", err)
		}
	}
	if h.apiReq.Load() != 1 {
		t.Fatalf("%d calls: a transient failure must not be bisected", h.apiReq.Load())
	}
}

func TestUpdateMultipleOfAMissingRow(t *testing.T) {
	c, _ := countedClient(t)
	missing := uuid.New()
	errs := c.UpdateMultiple(context.Background(), accounts, []dataverse.Target{{ID: missing, Attrs: domain.Attributes{"name": "x"}}})
	dv := dvError(t, errs[0])
	if dv.Status != 404 || dv.Code != "0x80040217" || dv.Message != "Account With Ids = "+missing.String()+" Do Not Exist" {
		t.Fatalf("%d %s %q", dv.Status, dv.Code, dv.Message)
	}
}
