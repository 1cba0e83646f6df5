package dataverse_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/dataverse"
)

func TestBatchChangeSetWithReferences(t *testing.T) {
	c, h := countedClient(t)
	res, err := c.Batch(context.Background(), []dataverse.BatchRequest{
		{Method: http.MethodPost, Path: "transactioncurrencies", Body: domain.Attributes{"isocurrencycode": "EUR"}},
		{Method: http.MethodPost, Path: "accounts", Body: domain.Attributes{"name": "Ref", "transactioncurrencyid@odata.bind": "$1"}},
	}, dataverse.BatchOptions{ChangeSet: true})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Err != nil || r.Status != 204 || r.Header.Get("OData-EntityId") == "" {
			t.Fatalf("result %d: %+v", i, r)
		}
	}
	rows, _ := h.emu.Rows("accounts")
	if len(rows) != 1 || rows[0]["_transactioncurrencyid_value"] == nil {
		t.Fatalf("accounts: %v", rows)
	}
}

func TestBatchFailedChangeSetGivesEveryRequestTheError(t *testing.T) {
	c, h := countedClient(t)
	res, err := c.Batch(context.Background(), []dataverse.BatchRequest{
		{Method: http.MethodPost, Path: "accounts", Body: domain.Attributes{"name": "A"}},
		{Method: http.MethodPost, Path: "accounts", Body: domain.Attributes{"name": strings.Repeat("x", 161)}},
	}, dataverse.BatchOptions{ChangeSet: true})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		var dv *domain.DataverseError
		if !errors.As(r.Err, &dv) || dv.Code != "0x80044331" {
			t.Fatalf("result %d: %+v", i, r)
		}
	}
	if rows, _ := h.emu.Rows("accounts"); len(rows) != 0 {
		t.Fatalf("%d rows kept from a failed change set", len(rows))
	}
}

func TestBatchStopsAtTheFirstFailureUnlessContinueOnError(t *testing.T) {
	c, _ := countedClient(t)
	reqs := []dataverse.BatchRequest{
		{Method: http.MethodPost, Path: "accounts", Body: domain.Attributes{"nosuch": 1}},
		{Method: http.MethodGet, Path: "accounts?$select=name"},
	}
	res, err := c.Batch(context.Background(), reqs, dataverse.BatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Status != 400 || !errors.Is(res[1].Err, dataverse.ErrNotRun) {
		t.Fatalf("stop on error: %+v / %+v", res[0], res[1])
	}
	res, err = c.Batch(context.Background(), reqs, dataverse.BatchOptions{ContinueOnError: true})
	if err != nil || res[0].Status != 400 || res[1].Status != 200 || res[1].Err != nil || !strings.Contains(string(res[1].Body), `"value"`) {
		t.Fatalf("continue on error: %v %+v / %+v", err, res[0], res[1])
	}
}
