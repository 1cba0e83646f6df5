package main

// End-to-end tests: an in-process JetStream server per test (random port, store in a temp dir),
// the Dataverse emulator, and a fresh PostgreSQL database for the package, wired exactly as the
// dvsync subcommands wire them.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dvsync/dvsync/consumers/replay"
	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/emulator"
	"github.com/dvsync/dvsync/infra/events"
	"github.com/dvsync/dvsync/infra/natsjs"
	"github.com/dvsync/dvsync/infra/postgres/pgtest"
	"github.com/dvsync/dvsync/infra/storage"
)

var testDatabaseURL string

func TestMain(m *testing.M) {
	if os.Getenv(inNetns) != "" { // TestDevNeedsNoPostgreSQL's own run, where no PostgreSQL is
		os.Exit(m.Run())
	}
	pgtest.Main(m, "e2e", &testDatabaseURL)
}

// harness is one running dvsync: NATS, the emulator, workers and a projector.
type harness struct {
	t         *testing.T
	emu       *emulator.Emulator
	js        jetstream.JetStream
	store     storage.Store
	workers   []*stack
	projector *stack
	prefix    string
	cfg       Config // what the components run with, for tests that start more
}

var testRun atomic.Int64

func start(t *testing.T, workers int) *harness {
	t.Helper()
	return startWith(t, options{workers: workers})
}

// startManualReplay starts one worker with automatic replay of waiting records turned off, for
// tests of replays a person asks for.
func startManualReplay(t *testing.T) *harness {
	t.Helper()
	return startWith(t, options{workers: 1, tweak: func(c *Config) { c.ReplayDependents = false }})
}

// options vary a harness's configuration.
type options struct {
	workers int
	tweak   func(*Config)
	// provision sets the emulator up before any component starts (a revoked privilege, say).
	provision func(*emulator.Emulator)
}

func startWith(t *testing.T, o options) *harness {
	t.Helper()
	workers := o.workers
	srv, err := natsjs.StartEmbedded("127.0.0.1", -1, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	emu := emulator.New()
	if o.provision != nil {
		o.provision(emu)
	}
	dvSrv := httptest.NewServer(emu.Handler())

	cfg := defaultConfig()
	cfg.NATSURL, cfg.DatabaseURL = srv.ClientURL(), testDatabaseURL
	cfg.Dataverse = DataverseConfig{URL: dvSrv.URL, TokenURL: dvSrv.URL + "/" + emu.Tenant + "/oauth2/v2.0/token",
		ClientID: emulator.DefaultApp.ClientID, ClientSecret: emulator.DefaultApp.ClientSecret,
		BatchSize: cfg.Dataverse.BatchSize, BatchLinger: cfg.Dataverse.BatchLinger}
	cfg.Worker.Lanes = 4
	if o.tweak != nil {
		o.tweak(&cfg)
	}
	if err := cfg.validate(true, true, true); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	h := &harness{t: t, emu: emu, prefix: fmt.Sprintf("T%d", testRun.Add(1)), cfg: cfg}
	var stacks []*stack
	launch := func(withDataverse bool, run func(*stack) func(context.Context) error) *stack {
		s := newStack(cfg, log)
		stacks = append(stacks, s)
		if err := connectAll(ctx, s, withDataverse); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(s)(ctx); err != nil && ctx.Err() == nil {
				t.Errorf("component stopped: %v", err)
			}
		}()
		return s
	}
	for i := 0; i < workers; i++ {
		h.workers = append(h.workers, launch(true, func(s *stack) func(context.Context) error { return s.runWorker }))
	}
	p := launch(false, func(s *stack) func(context.Context) error { return s.runProjector })
	h.js, h.store, h.projector = p.js, p.store, p
	// The workers' setup checks at start go first: a test that counts or slows Dataverse's
	// requests then meets only its own and the changes'.
	for _, w := range h.workers {
		select {
		case <-w.startChecked:
		case <-time.After(30 * time.Second):
			t.Fatal("a worker's setup check at start did not finish within 30s")
		}
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		for _, s := range stacks {
			s.close()
		}
		dvSrv.Close()
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	return h
}

// isoCode is a currency code of at most five characters (Dataverse's isocurrencycode length) that
// stays unique within a test.
func isoCode(key string) string { return key[max(0, len(key)-5):] }

// key makes a record key unique to this test, so tests share the database without meeting.
func (h *harness) key(k string) string { return h.prefix + k }

func (h *harness) publish(table, key string, version int64, fields map[string]any) {
	h.t.Helper()
	ev := domain.ChangeEvent{ID: uuid.NewString(), Type: domain.EventUpserted, Source: "bc-test", Table: table, Key: key,
		Version: version, Fields: fields}
	data, err := events.Encode(ev, time.Now())
	if err != nil {
		h.t.Fatal(err)
	}
	h.publishRaw(events.Subject(table), data, ev.ID)
}

func (h *harness) publishRaw(subject string, data []byte, msgID string) {
	h.t.Helper()
	if _, err := h.js.PublishMsg(context.Background(), &nats.Msg{Subject: subject, Data: data}, jetstream.WithMsgID(msgID)); err != nil {
		h.t.Fatal(err)
	}
}

// eventually waits for cond with a deadline; it is how these tests synchronise.
func (h *harness) eventually(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *harness) coupling(table, key string) domain.Coupling {
	h.t.Helper()
	c, err := h.store.Coupling(context.Background(), table, key)
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

func (h *harness) waitCoupled(table, key string, version int64) domain.Coupling {
	h.t.Helper()
	var c domain.Coupling
	h.eventually(fmt.Sprintf("%s/%s synced at version %d", table, key, version), func() bool {
		c = h.coupling(table, key)
		return c.Coupled() && c.Version == version && c.Status == domain.CouplingSynced
	})
	return c
}

func (h *harness) waitError(table, key string, kind domain.Kind) storage.StoredError {
	h.t.Helper()
	var found storage.StoredError
	h.eventually(fmt.Sprintf("a %s error of %s/%s", kind, table, key), func() bool {
		list, err := h.store.ListErrors(context.Background(), storage.ErrorFilter{Table: table, Key: key})
		if err != nil {
			h.t.Fatal(err)
		}
		for _, e := range list {
			if e.Kind == kind {
				found = e
				return true
			}
		}
		return false
	})
	return found
}

// idle waits until the workers' consumer has nothing pending or unacknowledged.
func (h *harness) idle() {
	h.t.Helper()
	h.eventually("the worker consumer to drain", func() bool {
		info, err := h.js.Consumer(context.Background(), natsjs.ChangesStream, natsjs.WorkerConsumer)
		if err != nil {
			return false
		}
		ci, err := info.Info(context.Background())
		return err == nil && ci.NumPending == 0 && ci.NumAckPending == 0
	})
}

// projectorSettled reports whether the projector has handled every message of the errors stream.
func (h *harness) projectorSettled() bool {
	// The projector's consumer is a push consumer (watermill's), which the new API does not fetch.
	legacy, err := h.projector.nc.JetStream()
	if err != nil {
		return false
	}
	info, err := legacy.ConsumerInfo(natsjs.ErrorsStream, natsjs.ProjectorConsumer)
	return err == nil && info.NumPending == 0 && info.NumAckPending == 0
}

func (h *harness) row(set string, id uuid.UUID) map[string]any { return h.emu.Row(set, id) }

func (h *harness) rowCount(set string) int {
	rows, err := h.emu.Rows(set)
	if err != nil {
		h.t.Fatal(err)
	}
	return len(rows)
}

func TestCurrencyThenCustomerSyncsWithTheLookupBound(t *testing.T) {
	h := start(t, 1)
	cur, cust := h.key("E"), h.key("C10000")
	h.publish("currency", cur, 1, map[string]any{"code": isoCode(cur), "displayName": "Euro", "symbol": "€"})
	currency := h.waitCoupled("currency", cur, 1)
	h.publish("customer", cust, 1, map[string]any{"number": cust, "displayName": "Adatum Corporation", "currencyCode": cur,
		"creditLimit": 12500.5, "city": "Atlanta"})
	account := h.waitCoupled("customer", cust, 1)

	row := h.row("accounts", account.RowID)
	if row == nil {
		t.Fatal("no account row in Dataverse")
	}
	if row["_transactioncurrencyid_value"] != currency.RowID.String() || row["name"] != "Adatum Corporation" ||
		row["accountnumber"] != cust || row["creditlimit"] != 12500.5 || row["customertypecode"] != int64(3) {
		t.Fatalf("account row = %v; want the currency %s bound", row, currency.RowID)
	}
}

func TestCustomerBeforeItsCurrencyIsACouplingError(t *testing.T) {
	h := start(t, 1)
	cust, cur := h.key("C20000"), h.key("USD")
	h.publish("customer", cust, 1, map[string]any{"number": cust, "displayName": "Trey Research", "currencyCode": cur})
	e := h.waitError("customer", cust, domain.KindDependencyNotCoupled)
	if e.Class != domain.ClassCoupling || !strings.Contains(e.Message, "Currency Code "+cur+" must be coupled to a record in Dataverse") ||
		e.Details["dependency_table"] != "currency" || e.Details["dependency_key"] != cur || e.Status != storage.ErrorOpen {
		t.Fatalf("stored error = %+v", e)
	}
	if n := h.rowCount("accounts"); n != 0 {
		t.Fatalf("Dataverse has %d accounts; an uncoupled dependency must not call Dataverse", n)
	}
	// Once the currency is coupled, the customer is replayed by itself (Business Central would
	// wait for a person to click Retry), syncs, and its error is resolved.
	h.publish("currency", cur, 1, map[string]any{"code": isoCode(cur)})
	h.waitCoupled("currency", cur, 1)
	h.waitCoupled("customer", cust, 1)
	h.eventually("the coupling error to be resolved", func() bool {
		list, _ := h.store.ListErrors(context.Background(), storage.ErrorFilter{Table: "customer", Key: cust, Status: storage.ErrorResolved})
		return len(list) == 1
	})
	if full, err := h.store.GetError(context.Background(), e.ID); err != nil || len(full.ReplayLog) != 1 ||
		full.ReplayLog[0].RequestedBy != replay.DependencyActor {
		t.Fatalf("replays of the resolved error: %+v (%v); want one by %q", full.ReplayLog, err, replay.DependencyActor)
	}
}

// With automatic replay turned off, a record waiting for its dependency stays failed until a
// person replays it.
func TestReplayDependentsOff(t *testing.T) {
	h := startManualReplay(t)
	cust, cur := h.key("C21000"), h.key("NZD")
	h.publish("customer", cust, 1, map[string]any{"number": cust, "currencyCode": cur})
	e := h.openError("customer", cust, domain.KindDependencyNotCoupled)
	h.publish("currency", cur, 1, map[string]any{"code": isoCode(cur)})
	h.waitCoupled("currency", cur, 1)
	// The worker acks the currency's change after publishing its resolution; once the projector
	// has handled that too, the customer's error is still open and was never replayed.
	h.idle()
	h.eventually("the projector to catch up", h.projectorSettled)
	got, err := h.store.GetError(context.Background(), e.ID)
	if err != nil || got.Status != storage.ErrorOpen || got.Replays != 0 {
		t.Fatalf("error = %+v (%v); want it open and never replayed", got.StoredError, err)
	}
}

func TestRevokedPrivilegeIsASetupErrorNamingIt(t *testing.T) {
	h := start(t, 1)
	uom, item := h.key("PCS"), h.key("1000")
	h.publish("unitOfMeasure", uom, 1, map[string]any{"code": uom, "displayName": "Piece"})
	h.waitCoupled("unitOfMeasure", uom, 1)
	if err := h.emu.SetPrivilege(emulator.DefaultApp.UserID, "prvCreateProduct", false); err != nil {
		t.Fatal(err)
	}
	h.publish("item", item, 1, map[string]any{"number": item, "displayName": "Bicycle", "unitPrice": 4000, "baseUnitOfMeasureCode": uom})
	e := h.waitError("item", item, domain.KindMissingPrivilege)
	if e.Class != domain.ClassSetup || e.Details["privilege"] != "prvCreateProduct" || e.Details["entity"] != "product" ||
		e.Details["user_id"] != emulator.DefaultApp.UserID.String() || *e.DataverseCode != "0x80040220" || *e.DataverseStatus != 403 {
		t.Fatalf("stored error = %+v, details %v", e, e.Details)
	}
	if !strings.Contains(e.Resolution, "prvCreateProduct") || len(e.CallStack) < 3 {
		t.Fatalf("resolution %q / call stack %v", e.Resolution, e.CallStack)
	}
	// Granted again, the next change syncs with the unit group and its base unit bound.
	if err := h.emu.SetPrivilege(emulator.DefaultApp.UserID, "prvCreateProduct", true); err != nil {
		t.Fatal(err)
	}
	h.publish("item", item, 2, map[string]any{"number": item, "displayName": "Bicycle", "baseUnitOfMeasureCode": uom})
	c := h.waitCoupled("item", item, 2)
	product := h.row("products", c.RowID)
	if product["_defaultuomscheduleid_value"] != h.coupling("unitOfMeasure", uom).RowID.String() || product["_defaultuomid_value"] == nil {
		t.Fatalf("product = %v; want the unit group and its base unit bound", product)
	}
}

func TestDeletedDestinationRowIsACouplingError(t *testing.T) {
	h := start(t, 1)
	cur := h.key("GBP")
	h.publish("currency", cur, 1, map[string]any{"code": isoCode(cur)})
	c := h.waitCoupled("currency", cur, 1)
	if err := h.emu.DeleteRow("transactioncurrencies", c.RowID); err != nil {
		t.Fatal(err)
	}
	h.publish("currency", cur, 2, map[string]any{"code": isoCode(cur), "displayName": "Pound"})
	e := h.waitError("currency", cur, domain.KindDestinationDeleted)
	if e.Class != domain.ClassCoupling || *e.DataverseCode != "0x80040217" || e.RowID == nil || *e.RowID != c.RowID ||
		!strings.Contains(e.Message, "coupled to a deleted record") {
		t.Fatalf("stored error = %+v", e)
	}
	if n := h.rowCount("transactioncurrencies"); n != 1 { // the base currency
		t.Fatalf("the deleted row was re-created (%d rows besides the base currency); the mapping says report", n-1)
	}
}

func TestOlderVersionAfterNewerChangesNothing(t *testing.T) {
	h := start(t, 1)
	cur := h.key("CHF")
	h.publish("currency", cur, 5, map[string]any{"code": isoCode(cur), "displayName": "Franc (new)"})
	c := h.waitCoupled("currency", cur, 5)
	stale := testutil.ToFloat64(h.workers[0].metrics.EventsHandled.WithLabelValues("currency", "stale"))
	h.publish("currency", cur, 4, map[string]any{"code": isoCode(cur), "displayName": "Franc (old)"})
	h.eventually("the older event to be counted as stale", func() bool {
		return testutil.ToFloat64(h.workers[0].metrics.EventsHandled.WithLabelValues("currency", "stale")) == stale+1
	})
	if got := h.row("transactioncurrencies", c.RowID)["currencyname"]; got != "Franc (new)" {
		t.Fatalf("currencyname = %v after an older event", got)
	}
	if v := h.coupling("currency", cur).Version; v != 5 {
		t.Fatalf("coupling version = %d, want 5", v)
	}
}

// A worker that wrote Dataverse and died before the coupling was committed: the redelivered
// change must update the row it created, not create a second one.
func TestRedeliveryAfterALostCouplingCreatesNoSecondRow(t *testing.T) {
	h := start(t, 1)
	cur := h.key("JPY")
	ev := domain.ChangeEvent{ID: uuid.NewString(), Type: domain.EventUpserted, Source: "bc-test", Table: "currency", Key: cur,
		Version: 1, Fields: map[string]any{"code": isoCode(cur), "displayName": "Yen"}}
	data, _ := events.Encode(ev, time.Now())
	h.publishRaw(events.Subject("currency"), data, ev.ID)
	first := h.waitCoupled("currency", cur, 1)

	conn, err := pgx.Connect(context.Background(), testDatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), `DELETE FROM couplings WHERE table_name = 'currency' AND source_key = $1`, cur); err != nil {
		t.Fatal(err)
	}
	// The same change again, as JetStream redelivers it (a new stream message: the old one was acked).
	h.publishRaw(events.Subject("currency"), data, ev.ID+"-redelivery")
	again := h.waitCoupled("currency", cur, 1)
	if again.RowID != first.RowID || h.rowCount("transactioncurrencies") != 2 { // and the base currency
		t.Fatalf("redelivery coupled %s (first %s), %d rows; want the same single row", again.RowID, first.RowID, h.rowCount("transactioncurrencies"))
	}
	// A publisher retry with the same Nats-Msg-Id is dropped by JetStream's duplicate window.
	h.publishRaw(events.Subject("currency"), data, ev.ID)
	h.idle()
	if n := h.rowCount("transactioncurrencies") - 1; n != 1 { // besides the base currency
		t.Fatalf("%d rows after a duplicate publish", n)
	}
}

func TestNonJSONMessageBecomesAnInvalidEventWithItsBytes(t *testing.T) {
	h := start(t, 1)
	raw := []byte("this is not JSON \x00\x01")
	h.publishRaw("dvsync.changes.customer", raw, uuid.NewString())
	var found storage.StoredError
	h.eventually("an invalid_event error", func() bool {
		list, _ := h.store.ListErrors(context.Background(), storage.ErrorFilter{Class: domain.ClassSetup, Table: "customer"})
		for _, e := range list {
			if e.Kind == domain.KindInvalidEvent && string(e.Event) == string(raw) {
				found = e
				return true
			}
		}
		return false
	})
	if !strings.Contains(found.Message, "not JSON") || !strings.HasPrefix(found.Key, "seq:") || found.Stage != "decode" {
		t.Fatalf("stored error = %+v", found)
	}
	// The stream is not blocked: a good event after it syncs.
	cur := h.key("SEK")
	h.publish("currency", cur, 1, map[string]any{"code": isoCode(cur)})
	h.waitCoupled("currency", cur, 1)
}

// Two worker processes on one durable consumer, many versions of few records published in
// order: every record ends at its newest version, with one row each.
func TestTwoWorkersShareTheConsumerAndNewestWins(t *testing.T) {
	h := start(t, 2)
	const records, versions = 6, 8
	for v := int64(1); v <= versions; v++ {
		for r := 0; r < records; r++ {
			cur := h.key(fmt.Sprintf("R%d", r))
			h.publish("currency", cur, v, map[string]any{"code": isoCode(cur), "displayName": fmt.Sprintf("v%d", v)})
		}
	}
	h.idle()
	for r := 0; r < records; r++ {
		c := h.waitCoupled("currency", h.key(fmt.Sprintf("R%d", r)), versions)
		if got := h.row("transactioncurrencies", c.RowID)["currencyname"]; got != fmt.Sprintf("v%d", versions) {
			t.Errorf("record %d: Dataverse has %v, want v%d", r, got, versions)
		}
	}
	if n := h.rowCount("transactioncurrencies") - 1; n != records { // the base currency is not the test's
		t.Fatalf("%d rows, want %d", n, records)
	}
	handled := 0.0
	for _, w := range h.workers {
		for _, o := range []string{"synced", "stale"} {
			handled += testutil.ToFloat64(w.metrics.EventsHandled.WithLabelValues("currency", o))
		}
	}
	if handled != records*versions {
		t.Fatalf("handled %v events, want %d", handled, records*versions)
	}
}

// The emulator's service protection answers 429 with Retry-After; the worker waits and retries
// in process, and nothing is reported.
func TestThrottlingIsRetriedInProcessWithoutAnError(t *testing.T) {
	// One call a request: four writes batched together would not reach the limit.
	h := startWith(t, options{workers: 1, tweak: func(c *Config) { c.Dataverse.BatchSize = 1 }})
	h.emu.SetLimits(emulator.Limits{Requests: 2, Window: 2 * time.Second})
	var keys []string
	for i := 0; i < 4; i++ {
		cur := h.key(fmt.Sprintf("N%d", i))
		keys = append(keys, cur)
		h.publish("currency", cur, 1, map[string]any{"code": isoCode(cur)})
	}
	for _, cur := range keys {
		h.waitCoupled("currency", cur, 1)
	}
	if n := testutil.ToFloat64(h.workers[0].metrics.TransientRetries.WithLabelValues("currency", "throttled")); n < 1 {
		t.Fatalf("transient retries counted %v; four writes against two per window must be throttled", n)
	}
	list, _ := h.store.ListErrors(context.Background(), storage.ErrorFilter{Table: "currency"})
	for _, e := range list {
		for _, k := range keys {
			if e.Key == k {
				t.Fatalf("a throttled and retried change left an error: %+v", e)
			}
		}
	}
}

func TestDataverseDownIsRedeliveredUntilItAnswers(t *testing.T) {
	h := startWith(t, options{workers: 1, tweak: func(c *Config) {
		c.Worker.HandleTimeout = time.Second
		c.Worker.RedeliveryDelay = func(uint64) time.Duration { return 100 * time.Millisecond }
	}})
	if err := h.emu.InjectFault(emulator.Fault{Kind: "outage", For: time.Hour}); err != nil {
		t.Fatal(err)
	}
	cur := h.key("DKK")
	h.publish("currency", cur, 1, map[string]any{"code": isoCode(cur)})
	h.eventually("the change to be nak'd for redelivery", func() bool {
		return testutil.ToFloat64(h.workers[0].metrics.EventsHandled.WithLabelValues("currency", "retried")) >= 1
	})
	h.emu.ClearFaults()
	h.waitCoupled("currency", cur, 1)
	list, _ := h.store.ListErrors(context.Background(), storage.ErrorFilter{Table: "currency", Key: cur})
	if len(list) != 0 {
		t.Fatalf("a change that healed left errors: %+v", list)
	}
}

func TestSpentRetriesBecomeADataverseUnavailableSetupError(t *testing.T) {
	h := startWith(t, options{workers: 1, tweak: func(c *Config) {
		c.Topology.MaxDeliver = 2
		c.Worker.HandleTimeout = 500 * time.Millisecond
		c.Worker.RedeliveryDelay = func(uint64) time.Duration { return 50 * time.Millisecond }
	}})
	if err := h.emu.InjectFault(emulator.Fault{Kind: "outage", For: time.Hour}); err != nil {
		t.Fatal(err)
	}
	cur := h.key("PLN")
	h.publish("currency", cur, 1, map[string]any{"code": isoCode(cur)})
	e := h.waitError("currency", cur, domain.KindDataverseUnavailable)
	// Parked on the 2nd delivery; a park whose error event could not be published within the
	// handle timeout (a loaded machine) is redelivered and parks again, with the higher count.
	attempts, _ := strconv.Atoi(e.Details["attempts"])
	if e.Class != domain.ClassSetup || attempts < 2 || e.Details["last_kind"] != string(domain.KindServerError) ||
		e.Event == nil {
		t.Fatalf("stored error = %+v", e)
	}
	h.idle() // parked as an error, not left pending
}

// Every lane busy with a record that has a lookup, against a slow Dataverse: the per-record
// transactions must not starve the lookups of database connections.
func TestAllLanesBusyWithLookupsDoNotStarveTheDatabasePool(t *testing.T) {
	h := startWith(t, options{workers: 1, tweak: func(c *Config) { c.Worker.Lanes = 16 }})
	h.emu.SetLatency(emulator.Latency{PerRequest: 100 * time.Millisecond})
	cur := h.key("USD")
	h.publish("currency", cur, 1, map[string]any{"code": isoCode(cur)})
	h.waitCoupled("currency", cur, 1)
	const customers = 48
	for i := 0; i < customers; i++ {
		k := h.key(fmt.Sprintf("C%d", i))
		h.publish("customer", k, 1, map[string]any{"number": k, "currencyCode": cur})
	}
	h.idle()
	for i := 0; i < customers; i++ {
		h.waitCoupled("customer", h.key(fmt.Sprintf("C%d", i)), 1)
	}
	if n := testutil.ToFloat64(h.workers[0].metrics.TransientRetries.WithLabelValues("customer", "store")); n != 0 {
		t.Fatalf("%v store failures; the pool was starved", n)
	}
}

// A change that keeps failing transiently is retried until its retry budget is spent, then
// parked as a setup error with its bytes; MaxDeliver is not what stops it.
func TestRetryBudgetParksTheChange(t *testing.T) {
	h := startWith(t, options{workers: 1, tweak: func(c *Config) {
		c.Worker.HandleTimeout = 300 * time.Millisecond
		c.Worker.RetryBudget = 1500 * time.Millisecond
		c.Worker.RedeliveryDelay = func(uint64) time.Duration { return 100 * time.Millisecond }
	}})
	if err := h.emu.InjectFault(emulator.Fault{Kind: "outage", For: time.Hour}); err != nil {
		t.Fatal(err)
	}
	cur := h.key("HUF")
	ev := domain.ChangeEvent{ID: uuid.NewString(), Type: domain.EventUpserted, Source: "bc-test", Table: "currency", Key: cur,
		Version: 1, Fields: map[string]any{"code": isoCode(cur)}}
	data, _ := events.Encode(ev, time.Now())
	msg := &nats.Msg{Subject: events.Subject("currency"), Data: data, Header: nats.Header{
		"Dvsync-Correlation-Id": {"trace-42"}, "Authorization": {"Bearer leaked-token"}}}
	if _, err := h.js.PublishMsg(context.Background(), msg, jetstream.WithMsgID(ev.ID)); err != nil {
		t.Fatal(err)
	}
	e := h.waitError("currency", cur, domain.KindDataverseUnavailable)
	attempts, _ := strconv.Atoi(e.Details["attempts"])
	if e.Class != domain.ClassSetup || attempts < 2 || attempts >= 200 || string(e.Event) != string(data) {
		t.Fatalf("stored error = %+v", e)
	}
	raw, _ := json.Marshal(e)
	if strings.Contains(string(raw), "leaked-token") {
		t.Fatal("a credential from the event's headers was stored with the error")
	}
	h.idle()
}

// Business Central's skip rule, end to end: the same failure twice skips the customer, its next
// change is kept with the open error (not sent), and once its currency is coupled the customer
// syncs by itself and the error is resolved.
func TestSkippedRecordKeepsItsChangesUntilTheCauseIsGone(t *testing.T) {
	h := start(t, 1)
	cust, cur := h.key("C40000"), h.key("ZAR")
	for v := int64(1); v <= 2; v++ {
		h.publish("customer", cust, v, map[string]any{"number": cust, "displayName": fmt.Sprintf("v%d", v), "currencyCode": cur})
		h.eventually(fmt.Sprintf("failure %d to be recorded", v), func() bool { return h.coupling("customer", cust).Failures == int(v) })
	}
	if !h.coupling("customer", cust).Skipped {
		t.Fatal("the same failure twice did not skip the record")
	}
	h.publish("customer", cust, 3, map[string]any{"number": cust, "displayName": "v3", "currencyCode": cur})
	h.eventually("the kept change in the ledger", func() bool {
		e := h.waitError("customer", cust, domain.KindDependencyNotCoupled)
		return e.EventVersion != nil && *e.EventVersion == 3 && e.Details["skipped"] == "true"
	})
	e := h.waitError("customer", cust, domain.KindDependencyNotCoupled)
	if e.Occurrences != 3 || !strings.Contains(e.Message, "must be coupled") || h.rowCount("accounts") != 0 {
		t.Fatalf("the open error after a skipped change: %+v (%d accounts)", e, h.rowCount("accounts"))
	}
	h.publish("currency", cur, 1, map[string]any{"code": isoCode(cur)})
	h.waitCoupled("currency", cur, 1)
	h.publish("customer", cust, 4, map[string]any{"number": cust, "displayName": "v4", "currencyCode": cur})
	c := h.waitCoupled("customer", cust, 4)
	if c.Skipped || h.row("accounts", c.RowID)["name"] != "v4" {
		t.Fatalf("after the currency was coupled: %+v", c)
	}
	h.eventually("the error to be resolved", func() bool {
		list, _ := h.store.ListErrors(context.Background(), storage.ErrorFilter{Table: "customer", Key: cust, Status: storage.ErrorOpen})
		return len(list) == 0
	})
}

// Dataverse counts its limits per user: a 429 for one worker holds back the other worker of the
// same app registration, in another process, until Retry-After has passed.
func TestThrottlingSlowsEveryWorkerOfTheUser(t *testing.T) {
	h := start(t, 2)
	h.emu.SetLimits(emulator.Limits{Requests: 1, Window: 3 * time.Second})
	ctx := context.Background()
	first, other := h.workers[0].dvUsers[0].Client, h.workers[1].dvUsers[0].Client
	_, _ = first.Query(ctx, "accounts", nil)
	if _, err := first.Query(ctx, "accounts", nil); domain.ClassifyDataverse(err) == nil || domain.ClassifyDataverse(err).Kind != domain.KindThrottled {
		t.Fatalf("the second request within the limit was not throttled: %v", err)
	}
	h.eventually("the other worker to hold back", func() bool { return time.Until(other.HeldUntil()) > 0 })
	if held := time.Until(other.HeldUntil()); held > 4*time.Second {
		t.Fatalf("held for %s; Retry-After was at most 3s", held)
	}
}
