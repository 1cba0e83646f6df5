package main

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/emulator"
	"github.com/dvsync/dvsync/infra/storage"
)

// A privilege revoked before the worker starts is a preflight setup error before any record is
// sent, shown by the API and `dvsync doctor`; granted again, the next periodic check resolves it.
func TestRevokedPrivilegeIsAPreflightErrorUntilTheNextCheckPasses(t *testing.T) {
	const privilege = "prvCreateProduct"
	key := "product/" + privilege
	var writesBefore int64
	h := startWith(t, options{workers: 1,
		provision: func(emu *emulator.Emulator) {
			if err := emu.SetPrivilege(emulator.DefaultApp.UserID, privilege, false); err != nil {
				t.Fatal(err)
			}
			writesBefore = emu.Changes()
		},
		tweak: func(c *Config) { c.PreflightEvery = 200 * time.Millisecond }})
	base := h.api()
	ctx := context.Background()

	// No record has been published: the error comes from the check at the worker's start.
	var found storage.StoredError
	h.eventually("the preflight error of "+key, func() bool {
		page, err := h.store.PageErrors(ctx, storage.ErrorFilter{Table: domain.PreflightTable, Key: key, Status: storage.ErrorOpen, Limit: 1})
		if err != nil || len(page.Errors) == 0 {
			return false
		}
		found = page.Errors[0]
		return true
	})
	if found.Class != domain.ClassSetup || found.Kind != domain.KindMissingPrivilege || found.Stage != domain.PreflightStage ||
		found.Details["user_id"] != emulator.DefaultApp.UserID.String() || !strings.Contains(found.Resolution, privilege) {
		t.Fatalf("preflight error = %+v", found)
	}
	if n := h.emu.Changes(); n != writesBefore {
		t.Fatalf("the emulator took %d writes before any record was sent", n-writesBefore)
	}
	var body struct {
		OK     bool                  `json:"ok"`
		Errors []storage.StoredError `json:"errors"`
	}
	if code := call(t, "GET", base+"/api/v1/preflight", testViewerToken, nil, &body); code != 200 || body.OK || !hasKey(body.Errors, key) {
		t.Fatalf("GET /api/v1/preflight: %d %+v", code, body)
	}
	doctor := func() (int, string) {
		t.Setenv("DATAVERSE_URL", h.cfg.Dataverse.URL)
		t.Setenv("DATAVERSE_TOKEN_URL", h.cfg.Dataverse.TokenURL)
		t.Setenv("DATAVERSE_CLIENT_ID", h.cfg.Dataverse.ClientID)
		t.Setenv("DATAVERSE_CLIENT_SECRET", h.cfg.Dataverse.ClientSecret)
		var out, errOut bytes.Buffer
		code := run(ctx, []string{"doctor"}, &out, &errOut)
		return code, out.String() + errOut.String()
	}
	if code, out := doctor(); code != 1 || !strings.Contains(out, "GAP  "+key) || !strings.Contains(out, "ok   account/prvCreateAccount") ||
		!strings.Contains(out, `Roles: own "Application user role `) {
		t.Fatalf("doctor with a gap: exit %d\n%s", code, out)
	}

	if err := h.emu.SetPrivilege(emulator.DefaultApp.UserID, privilege, true); err != nil {
		t.Fatal(err)
	}
	h.eventually("the preflight error resolved by the next check", func() bool {
		e, err := h.store.GetError(ctx, found.ID)
		return err == nil && e.Status == storage.ErrorResolved
	})
	if code := call(t, "GET", base+"/api/v1/preflight", testViewerToken, nil, &body); code != 200 || !body.OK || len(body.Errors) != 0 {
		t.Fatalf("GET /api/v1/preflight after the grant: %d %+v", code, body)
	}
	if code, out := doctor(); code != 0 || strings.Contains(out, "GAP") {
		t.Fatalf("doctor without gaps: exit %d\n%s", code, out)
	}
}

// A privilege the integration user holds only through an owner team's role, revoked from that
// role, is a preflight setup error naming the team before any record is sent; granted again on
// the team's role, the next check resolves it.
func TestAPrivilegeRevokedFromTheTeamRoleNamesTheTeam(t *testing.T) {
	const privilege = "prvCreateProduct"
	key := "product/" + privilege
	var role uuid.UUID
	var writesBefore int64
	h := startWith(t, options{workers: 1,
		provision: func(emu *emulator.Emulator) {
			user := emulator.DefaultApp.UserID
			_, roles, err := emu.AddTeam(emulator.TeamSpec{Name: "Sales integration", Type: emulator.TeamOwner, Members: []uuid.UUID{user},
				Roles: []emulator.RoleSpec{{Name: "DVSync sync", Privileges: []string{"*", "prvReadRole", "prvReadTeam"}}}})
			if err != nil {
				t.Fatal(err)
			}
			role = roles[0]
			// Its own role taken away, the user holds every privilege through the team alone.
			if err := emu.SetRoleAssigned(user, false); err != nil {
				t.Fatal(err)
			}
			if err := emu.SetRolePrivilege(role, privilege, false); err != nil {
				t.Fatal(err)
			}
			writesBefore = emu.Changes()
		},
		tweak: func(c *Config) { c.PreflightEvery = 200 * time.Millisecond }})
	ctx := context.Background()
	var found storage.StoredError
	h.eventually("the preflight error of "+key, func() bool {
		page, err := h.store.PageErrors(ctx, storage.ErrorFilter{Table: domain.PreflightTable, Key: key, Status: storage.ErrorOpen, Limit: 1})
		if err != nil || len(page.Errors) == 0 {
			return false
		}
		found = page.Errors[0]
		return true
	})
	if found.Kind != domain.KindMissingPrivilege || found.Details["team"] != "Sales integration" || found.Details["role"] != "DVSync sync" ||
		!strings.Contains(found.Resolution, `to the role "DVSync sync" of the team "Sales integration"`) ||
		!strings.Contains(found.Resolution, "not from a role of the user") {
		t.Fatalf("preflight error = %+v", found)
	}
	if n := h.emu.Changes(); n != writesBefore {
		t.Fatalf("the emulator took %d writes before any record was sent", n-writesBefore)
	}
	if err := h.emu.SetRolePrivilege(role, privilege, true); err != nil {
		t.Fatal(err)
	}
	h.eventually("the team's preflight error resolved by the next check", func() bool {
		e, err := h.store.GetError(ctx, found.ID)
		return err == nil && e.Status == storage.ErrorResolved
	})
}

// A source whose local currency is not Dataverse's base currency is a currency_setup error before
// any record is sent, saying which currency is the base; provisioned with that currency, the next
// check resolves it.
func TestALocalCurrencyThatIsNotTheBaseCurrencyIsASetupError(t *testing.T) {
	h := startWith(t, options{workers: 1,
		tweak: func(c *Config) { c.PreflightEvery = 200 * time.Millisecond; c.LocalCurrency = "EUR" }})
	ctx := context.Background()
	var found storage.StoredError
	h.eventually("the currency setup error", func() bool {
		page, err := h.store.PageErrors(ctx, storage.ErrorFilter{Table: domain.PreflightTable, Key: domain.CurrencyBaseKey, Status: storage.ErrorOpen, Limit: 1})
		if err != nil || len(page.Errors) == 0 {
			return false
		}
		found = page.Errors[0]
		return true
	})
	if found.Kind != domain.KindCurrencySetup || found.Class != domain.ClassSetup || !strings.Contains(found.Message, "base currency is USD") ||
		!strings.Contains(found.Message, "local currency (DVSYNC_LOCAL_CURRENCY) is EUR") {
		t.Fatalf("currency error = %+v", found)
	}
	if err := h.emu.SetBaseCurrency(emulator.Currency{ISOCode: "EUR", Name: "Euro", Symbol: "€"}); err != nil {
		t.Fatal(err)
	}
	h.eventually("the currency error resolved by the next check", func() bool {
		e, err := h.store.GetError(ctx, found.ID)
		return err == nil && e.Status == storage.ErrorResolved
	})
}

func hasKey(es []storage.StoredError, key string) bool {
	for _, e := range es {
		if e.Key == key {
			return true
		}
	}
	return false
}

// unreachableLedger is a ledger that does not answer.
type unreachableLedger struct{ storage.Store }

func (unreachableLedger) ListCouplings(context.Context, storage.CouplingFilter) ([]domain.Coupling, error) {
	return nil, errors.New("dial tcp 127.0.0.1:5432: connect: connection refused")
}

// A ledger that does not answer skips the coupled currencies, saying why; it fails nothing.
func TestTheCoupledCurrenciesAreSkippedWhenTheLedgerDoesNotAnswer(t *testing.T) {
	s := &stack{mappings: domain.DefaultMappings(), store: unreachableLedger{}}
	cs, skipped := s.currencyCouplings(context.Background())
	if cs != nil || !strings.Contains(skipped, "the ledger did not answer") || !strings.Contains(skipped, "connection refused") {
		t.Fatalf("couplings %v, skipped %q", cs, skipped)
	}
	s.store = nil
	if _, skipped := s.currencyCouplings(context.Background()); skipped == "" {
		t.Fatal("doctor, which reads no ledger, did not say it skipped the coupled currencies")
	}
}

// A Dataverse that hangs on the setup check at start holds the worker up no longer than
// DVSYNC_PREFLIGHT_START_TIMEOUT: it logs, counts the check as failed, and consumes.
func TestASlowSetupCheckAtStartDoesNotHoldUpConsuming(t *testing.T) {
	h := start(t, 0)
	cfg := h.cfg
	cfg.PreflightStartTimeout = 300 * time.Millisecond
	s := newStack(cfg, h.projector.log)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	if err := connectAll(ctx, s, true); err != nil {
		t.Fatal(err)
	}
	defer s.close()
	// The check's first request (WhoAmI) hangs for longer than the test waits for the start.
	if err := h.emu.InjectFault(emulator.Fault{Kind: "slow", Delay: 8 * time.Second, Count: 1}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.runWorker(ctx) }()
	select {
	case <-s.startChecked:
	case err := <-done:
		t.Fatalf("the worker stopped at start: %v", err)
	case <-time.After(6 * time.Second):
		t.Fatal("the setup check at start held the worker up past its start timeout")
	}
	if n := testutil.ToFloat64(s.metrics.PreflightChecks.WithLabelValues("start", "failed")); n != 1 {
		t.Fatalf("dvsync_preflight_checks_total{when=start,outcome=failed} = %v", n)
	}
	key := h.key("SLOWSTART")
	h.publish("currency", key, 1, map[string]any{"code": isoCode(key), "displayName": "Slow start"})
	h.waitCoupled("currency", key, 1)
	stop()
	if err := <-done; err != nil {
		t.Fatalf("worker: %v", err)
	}
}

// With DVSYNC_LOCAL_CURRENCY, a customer whose currency code is blank is in the local currency (as
// in Business Central): its account's currency is the local currency's row, here the base
// currency it coupled to by match; the setup check finds no currency gap.
func TestABlankCurrencyCodeBindsTheLocalCurrency(t *testing.T) {
	lcy := strings.ToUpper(uuid.NewString()[:5])
	h := startWith(t, options{workers: 1,
		provision: func(emu *emulator.Emulator) {
			if err := emu.SetBaseCurrency(emulator.Currency{ISOCode: lcy, Name: "Local", Symbol: "¤"}); err != nil {
				t.Fatal(err)
			}
		},
		tweak: func(c *Config) { c.LocalCurrency = lcy }})
	base, _ := h.emu.BaseCurrency()
	h.publish("currency", lcy, 1, map[string]any{"code": lcy, "displayName": "Local"})
	if c := h.waitCoupled("currency", lcy, 1); c.RowID != base {
		t.Fatalf("the local currency coupled to %s, want the base currency %s", c.RowID, base)
	}
	cust := h.key("BLANKCUR")
	h.publish("customer", cust, 1, map[string]any{"number": cust, "displayName": "Blank currency", "currencyCode": ""})
	c := h.waitCoupled("customer", cust, 1)
	if row := h.row("accounts", c.RowID); row["_transactioncurrencyid_value"] != base.String() {
		t.Fatalf("account = %v; want the local currency %s", row, base)
	}
	rep, err := h.workers[0].preflight(context.Background())
	if err != nil || !rep.OK() || !slices.ContainsFunc(rep.Checks, func(c domain.PreflightCheck) bool { return c.Key == "currency/"+lcy && c.OK }) {
		t.Fatalf("the setup check with the local currency as the base and coupled: %+v %v", rep, err)
	}
}
