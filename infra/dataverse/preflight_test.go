package dataverse_test

import (
	"context"
	"testing"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/emulator"
)

func TestPreflightAgainstTheEmulator(t *testing.T) {
	c, emu := newClient(t)
	ctx := context.Background()
	ms := domain.DefaultMappings()
	rep, err := c.Preflight(ctx, ms)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Principal.UserID != emulator.DefaultApp.UserID.String() || rep.BaseCurrency != "USD" || rep.Checked < 50 {
		t.Fatalf("a complete setup: %+v", rep)
	}
	// A revoked privilege is a gap that names the privilege; granting it back clears it.
	if err := emu.SetPrivilege(emulator.DefaultApp.UserID, "prvAppendToTransactionCurrency", false); err != nil {
		t.Fatal(err)
	}
	rep, err = c.Preflight(ctx, ms)
	if err != nil || len(rep.Gaps) != 1 || rep.Gaps[0].Key != "transactioncurrency/prvAppendToTransactionCurrency" ||
		rep.Gaps[0].Failure.Kind != domain.KindMissingPrivilege {
		t.Fatalf("after the revoke: %+v %v", rep.Gaps, err)
	}
	if err := emu.SetPrivilege(emulator.DefaultApp.UserID, "prvAppendToTransactionCurrency", true); err != nil {
		t.Fatal(err)
	}
	// An application an administrator restricted is one gap, not a missing privilege.
	if err := emu.RestrictApp(emulator.DefaultApp.ClientID, true); err != nil {
		t.Fatal(err)
	}
	rep, err = c.Preflight(ctx, ms)
	if err != nil || len(rep.Gaps) != 1 || rep.Gaps[0].Failure.Kind != domain.KindAppRestricted {
		t.Fatalf("restricted: %+v %v", rep.Gaps, err)
	}
	if err := emu.RestrictApp(emulator.DefaultApp.ClientID, false); err != nil {
		t.Fatal(err)
	}
	// A mapped column the environment lacks is a schema gap.
	m := ms["customer"]
	m.Fields = append(m.Fields, domain.FieldMapping{Source: "x", Attribute: "new_nosuchcolumn", Type: domain.TypeString})
	ms["customer"] = m
	rep, err = c.Preflight(ctx, ms)
	if err != nil || len(rep.Gaps) != 1 || rep.Gaps[0].Key != "account.new_nosuchcolumn" || rep.Gaps[0].Failure.Kind != domain.KindSchemaMismatch {
		t.Fatalf("missing column: %+v %v", rep.Gaps, err)
	}
}
