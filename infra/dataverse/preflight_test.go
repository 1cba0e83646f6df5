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

func TestPreflightAgainstTheEmulator(t *testing.T) {
	c, emu := newClient(t)
	ctx := context.Background()
	ms := domain.DefaultMappings()
	rep, err := c.Preflight(ctx, ms, dataverse.PreflightOptions{})
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
	rep, err = c.Preflight(ctx, ms, dataverse.PreflightOptions{})
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
	rep, err = c.Preflight(ctx, ms, dataverse.PreflightOptions{})
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
	rep, err = c.Preflight(ctx, ms, dataverse.PreflightOptions{})
	if err != nil || len(rep.Gaps) != 1 || rep.Gaps[0].Key != "account.new_nosuchcolumn" || rep.Gaps[0].Failure.Kind != domain.KindSchemaMismatch {
		t.Fatalf("missing column: %+v %v", rep.Gaps, err)
	}
}

// A user that holds its privileges only through an owner team is told to change the team's role;
// one that may not read roles and teams gets neutral advice and a warning, not a failed check.
func TestPreflightNamesTheTeamAUsersPrivilegesComeFrom(t *testing.T) {
	c, emu := newClient(t)
	ctx := context.Background()
	ms := domain.DefaultMappings()
	user := emulator.DefaultApp.UserID
	team, roles, err := emu.AddTeam(emulator.TeamSpec{Name: "Sales integration", Type: emulator.TeamOwner, Members: []uuid.UUID{user},
		Roles: []emulator.RoleSpec{{Name: "DVSync sync", Privileges: []string{"*", "prvReadRole", "prvReadTeam"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := emu.AddTeam(emulator.TeamSpec{Name: "Shared rows", Type: emulator.TeamAccess, Members: []uuid.UUID{user}}); err != nil {
		t.Fatal(err)
	}
	if err := emu.SetRoleAssigned(user, false); err != nil {
		t.Fatal(err)
	}
	if err := emu.SetRolePrivilege(roles[0], "prvCreateProduct", false); err != nil {
		t.Fatal(err)
	}
	rep, err := c.Preflight(ctx, ms, dataverse.PreflightOptions{})
	if err != nil || len(rep.Gaps) != 1 || rep.Gaps[0].Key != "product/prvCreateProduct" {
		t.Fatalf("gaps %+v, %v", rep.Gaps, err)
	}
	f := rep.Gaps[0].Failure
	if f.Details["team"] != "Sales integration" || f.Details["team_id"] != team.String() || f.Details["role"] != "DVSync sync" ||
		!strings.Contains(f.Resolution, `to the role "DVSync sync" of the team "Sales integration"`) || strings.Contains(f.Resolution, "Shared rows") {
		t.Fatalf("resolution %q, details %v", f.Resolution, f.Details)
	}
	if len(rep.Principal.Teams) != 3 || len(rep.Principal.Roles) != 0 || len(rep.Warnings) != 0 {
		t.Fatalf("principal %+v, warnings %v", rep.Principal, rep.Warnings)
	}
	// Without prvReadTeam the advice names no team, and the check still runs.
	if err := emu.SetRolePrivilege(roles[0], "prvReadTeam", false); err != nil {
		t.Fatal(err)
	}
	rep, err = c.Preflight(ctx, ms, dataverse.PreflightOptions{})
	if err != nil || len(rep.Gaps) != 1 || !rep.Principal.RolesUnknown || len(rep.Warnings) != 1 || !strings.Contains(rep.Warnings[0], "prvReadTeam") {
		t.Fatalf("without prvReadTeam: %+v, %v", rep, err)
	}
	if f := rep.Gaps[0].Failure; f.Details["team"] != "" || !strings.Contains(f.Resolution, "could not be read") {
		t.Fatalf("neutral resolution: %q %v", f.Resolution, f.Details)
	}
}

// The local currency is compared with the base currency, and a coupled currency must be active;
// a ledger that could not be read skips that part.
func TestPreflightChecksTheCurrencies(t *testing.T) {
	c, emu := newClient(t)
	ctx := context.Background()
	ms := domain.DefaultMappings()
	rep, err := c.Preflight(ctx, ms, dataverse.PreflightOptions{LocalCurrency: "USD"})
	if err != nil || !rep.OK() {
		t.Fatalf("USD against USD: %+v %v", rep.Gaps, err)
	}
	gbp := uuid.New()
	if err := emu.LoadSeed([]byte(`{"transactioncurrencies":[{"transactioncurrencyid":"` + gbp.String() +
		`","isocurrencycode":"GBP","currencyname":"Pound","exchangerate":0.8,"statecode":1,"statuscode":2}]}`)); err != nil {
		t.Fatal(err)
	}
	base, _ := emu.BaseCurrency()
	couplings := []domain.Coupling{{Table: "currency", Key: "GBP", RowID: gbp, Entity: "transactioncurrency"},
		{Table: "currency", Key: "USD", RowID: base, Entity: "transactioncurrency"}}
	rep, err = c.Preflight(ctx, ms, dataverse.PreflightOptions{LocalCurrency: "EUR", CurrencyCouplings: couplings})
	keys := map[string]domain.Kind{}
	for _, g := range rep.Gaps {
		keys[g.Key] = g.Failure.Kind
	}
	if err != nil || len(rep.Gaps) != 2 || keys[domain.CurrencyBaseKey] != domain.KindCurrencySetup || keys["currency/GBP"] != domain.KindCurrencySetup {
		t.Fatalf("EUR against USD, GBP inactive: %v %v", keys, err)
	}
	rep, err = c.Preflight(ctx, ms, dataverse.PreflightOptions{LocalCurrency: "USD", CouplingsSkipped: "the ledger did not answer"})
	if err != nil || !rep.OK() || len(rep.Skipped) != 1 {
		t.Fatalf("skipped: %+v %v", rep, err)
	}
}
