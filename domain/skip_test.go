package domain_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/dvsync/dvsync/domain"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func skipSyncer(dv *recorder) (*domain.Syncer, *memStore, *clock) {
	s, st := newSyncer(dv)
	c := &clock{t: time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)}
	s.Now, s.Skip = c.now, domain.SkipPolicy{After: 2, Probe: 15 * time.Minute}
	return s, st, c
}

func privilegeDenied() error {
	return fmt.Errorf("PATCH: %w", &domain.DataverseError{Status: 403, Code: "0x80040220",
		Message: "Principal user (Id=3f2a9c1e-7b5d-4e8f-a1c2-9d0e6b4a7f35, type=8) is missing prvCreateTransactionCurrency privilege (Id=00000000-0000-0000-0000-000000000001)"})
}

func TestSameFailureTwiceSkipsTheRecordUntilAProbe(t *testing.T) {
	dv := &recorder{errs: []error{privilegeDenied(), privilegeDenied()}}
	s, st, c := skipSyncer(dv)
	for v := int64(1); v <= 2; v++ {
		if out := mustSync(t, s, upsert("currency", "EUR", v, map[string]any{"code": "EUR"})); out.Result != domain.ResultFailed {
			t.Fatalf("v%d: %s", v, out.Result)
		}
	}
	if cp, _ := st.Coupling(context.Background(), "currency", "EUR"); !cp.Skipped || cp.Failures != 2 {
		t.Fatalf("after two identical failures: %+v", cp)
	}
	out := mustSync(t, s, upsert("currency", "EUR", 3, map[string]any{"code": "EUR"}))
	if out.Result != domain.ResultSkipped || out.Failure.Kind != domain.KindMissingPrivilege || out.Failure.Details["skipped"] != "true" || len(dv.calls) != 2 {
		t.Fatalf("a change of a skipped record: %+v, %d calls", out, len(dv.calls))
	}
	// After the probe interval the record is tried: the privilege was granted, it syncs.
	c.t = c.t.Add(16 * time.Minute)
	if out := mustSync(t, s, upsert("currency", "EUR", 4, map[string]any{"code": "EUR"})); out.Result != domain.ResultSynced || !out.ResolvesErrors {
		t.Fatalf("the probe: %+v", out)
	}
	if cp, _ := st.Coupling(context.Background(), "currency", "EUR"); cp.Skipped || cp.Failures != 0 {
		t.Fatalf("after syncing: %+v", cp)
	}
}

func TestRetryAndCouplingTheDependencyUnskip(t *testing.T) {
	dv := &recorder{}
	s, _, _ := skipSyncer(dv)
	for v := int64(1); v <= 3; v++ {
		mustSync(t, s, upsert("customer", "C1", v, map[string]any{"number": "C1", "currencyCode": "EUR"}))
	}
	out := mustSync(t, s, upsert("customer", "C1", 4, map[string]any{"number": "C1", "currencyCode": "EUR"}))
	if out.Result != domain.ResultSkipped || len(dv.calls) != 0 {
		t.Fatalf("skipped while its currency is not coupled: %+v", out)
	}
	// A person's retry is tried (and fails again: the currency is still missing).
	retry := upsert("customer", "C1", 5, map[string]any{"number": "C1", "currencyCode": "EUR"})
	retry.Retry = true
	if out := mustSync(t, s, retry); out.Result != domain.ResultFailed || out.Failure.Kind != domain.KindDependencyNotCoupled {
		t.Fatalf("a retry: %+v", out)
	}
	// Once the currency is coupled the next change goes, with no probe to wait for.
	mustSync(t, s, upsert("currency", "EUR", 1, map[string]any{"code": "EUR"}))
	if out := mustSync(t, s, upsert("customer", "C1", 6, map[string]any{"number": "C1", "currencyCode": "EUR"})); out.Result != domain.ResultSynced {
		t.Fatalf("after the dependency was coupled: %+v", out)
	}
}

func TestTransientFailuresNeverSkip(t *testing.T) {
	throttled := &domain.DataverseError{Status: 429, Code: "0x80072322"}
	dv := &recorder{errs: []error{throttled, throttled, throttled}}
	s, st, _ := skipSyncer(dv)
	for i := 0; i < 3; i++ {
		if _, err := s.Sync(context.Background(), upsert("currency", "EUR", 1, map[string]any{"code": "EUR"})); err == nil {
			t.Fatal("a throttled write did not come back as an error to retry")
		}
	}
	if cp, _ := st.Coupling(context.Background(), "currency", "EUR"); cp.Skipped || cp.Failures != 0 {
		t.Fatalf("transient failures counted: %+v", cp)
	}
	if out := mustSync(t, s, upsert("currency", "EUR", 1, map[string]any{"code": "EUR"})); out.Result != domain.ResultSynced {
		t.Fatalf("after the throttling: %+v", out)
	}
}

func TestDifferentFailuresDoNotSkip(t *testing.T) {
	dv := &recorder{errs: []error{privilegeDenied(), &domain.DataverseError{Status: 400, Code: "0x80044331", Message: "too long"}}}
	s, st, _ := skipSyncer(dv)
	mustSync(t, s, upsert("currency", "EUR", 1, map[string]any{"code": "EUR"}))
	mustSync(t, s, upsert("currency", "EUR", 2, map[string]any{"code": "EUR"}))
	if cp, _ := st.Coupling(context.Background(), "currency", "EUR"); cp.Skipped || cp.Failures != 1 || cp.LastErrorKind != domain.KindInvalidData {
		t.Fatalf("two different failures: %+v", cp)
	}
}

// A change of a record skipped for a dependency names the dependency it waits for, as the
// failures before it did: its error may be the only one of the record that reaches the ledger
// (the errors of the first failures lost in a NATS leader loss, or stored after it), and the
// ledger finds the records to replay once a dependency is coupled by the dependency they name.
func TestASkippedChangeNamesTheDependencyItWaitsFor(t *testing.T) {
	dv := &recorder{}
	s, _, _ := skipSyncer(dv)
	for v := int64(1); v <= 2; v++ {
		mustSync(t, s, upsert("customer", "C1", v, map[string]any{"number": "C1", "currencyCode": "EUR"}))
	}
	for v, cur := range map[int64]string{3: "EUR", 4: "GBP"} {
		out := mustSync(t, s, upsert("customer", "C1", v, map[string]any{"number": "C1", "currencyCode": cur}))
		d := out.Failure.Details
		if out.Result != domain.ResultSkipped || out.Failure.Kind != domain.KindDependencyNotCoupled ||
			d["dependency_table"] != "currency" || d["dependency_key"] != cur || d["field"] != "currencyCode" || d["skipped"] != "true" || d["failures"] != "2" {
			t.Fatalf("v%d (currency %s) of the skipped record: %s, details %v; want skipped, naming currency %s", v, cur, out.Result, d, cur)
		}
	}
	if len(dv.calls) != 0 {
		t.Fatalf("%d Dataverse calls for a record whose currency is not coupled", len(dv.calls))
	}
}
