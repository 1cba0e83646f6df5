package projector_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/natsjs"
	"github.com/dvsync/dvsync/infra/storage"
)

// A preflight outcome resolves only the open gaps among the keys it checked, counts a date after
// its arrival as its arrival, and one on another subject or with a NUL key is kept as an invalid
// event with its bytes.
func TestPreflightOutcomesResolveOnlyTheKeysTheyCheckedAndAreBounded(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	run := uuid.NewString()[:8]
	checked, unchecked, later := "account/prvCreateAccount"+run, "account.name"+run, "currency/base"+run
	gap := func(key string, at time.Time) {
		t.Helper()
		f := domain.MissingPrivilegeGap(domain.Principal{UserID: "u"}, domain.PrivilegeNeed{Entity: "account", Verb: "Create", Tables: []string{"customer"}}, "prvCreateAccount")
		h.publishError(domain.ErrorEvent{ID: "preflight-" + uuid.NewString(), OccurredAt: at, Failure: *f, Table: domain.PreflightTable,
			Key: key, Entity: "account", Stage: domain.PreflightStage})
	}
	raw := func(subject string, c domain.PreflightChecked) []byte {
		t.Helper()
		data, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.js.Publish(ctx, subject, data); err != nil {
			t.Fatal(err)
		}
		return data
	}
	status := func(key string) storage.ErrorStatus { return h.stored(domain.PreflightTable, key).Status }
	now := time.Now().UTC()
	gap(checked, now)
	gap(unchecked, now)
	// Seen by a check whose clock runs ahead: an outcome dated later still came before it.
	gap(later, now.Add(10*time.Minute))
	done := h.startProjector(ctx, h.store)
	waitFor(t, "the gaps stored", func() bool {
		return status(checked) == storage.ErrorOpen && status(unchecked) == storage.ErrorOpen && status(later) == storage.ErrorOpen
	})

	pub := natsjs.Publisher{JS: h.js}
	if err := pub.PublishPreflight(ctx, "preflight-"+run, domain.PreflightChecked{Gaps: []string{}, Keys: []string{checked, later},
		Checked: 2, At: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the checked gap resolved", func() bool { return status(checked) == storage.ErrorResolved && h.consumerSettled() })
	if s := status(unchecked); s != storage.ErrorOpen {
		t.Fatalf("a gap the check did not look at is %s", s)
	}
	if s := status(later); s != storage.ErrorOpen {
		t.Fatalf("a gap seen after the outcome arrived is %s: a future date was not clamped", s)
	}

	invalid := func(data []byte, reason string) {
		t.Helper()
		waitFor(t, "the odd outcome kept as an invalid event", func() bool {
			list, err := h.store.ListErrors(ctx, storage.ErrorFilter{Table: "_errors", Limit: 1000})
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range list {
				if bytes.Equal(e.Event, data) {
					if e.Kind != domain.KindInvalidEvent || !strings.Contains(e.Message+e.Resolution, reason) {
						t.Fatalf("kept as %+v", e)
					}
					return true
				}
			}
			return false
		})
	}
	wrong := raw(natsjs.ResolvedSubject("customer"), domain.PreflightChecked{Table: domain.PreflightTable, Gaps: []string{},
		Keys: []string{unchecked}, At: now})
	invalid(wrong, "not on "+natsjs.ResolvedSubject(domain.PreflightTable))
	nul := raw(natsjs.ResolvedSubject(domain.PreflightTable), domain.PreflightChecked{Table: domain.PreflightTable, Gaps: []string{"a\x00b"},
		Keys: []string{unchecked, "a\x00b"}, At: now})
	invalid(nul, "NUL")
	if s := status(unchecked); s != storage.ErrorOpen {
		t.Fatalf("an odd outcome resolved a gap: %s", s)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
