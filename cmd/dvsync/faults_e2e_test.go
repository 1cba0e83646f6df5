package main

// End-to-end tests of the guarantees under faults (issue 8): each injects the fault into a
// running dvsync and checks the end state.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/emulator"
	"github.com/dvsync/dvsync/infra/natsjs"
)

// A write dvsync stopped waiting for may still be carried out by Dataverse later (a client
// timeout cancels nothing on the server). It must never land over a newer version.
func TestAWriteDvsyncGaveUpOnNeverLandsOverANewerOne(t *testing.T) {
	h := startWith(t, options{workers: 1, tweak: func(c *Config) { c.Dataverse.RequestTimeout = 300 * time.Millisecond }})
	key := h.key("LATE")
	fields := func(v int) map[string]any {
		return map[string]any{"number": isoCode(key), "displayName": fmt.Sprintf("%s v%d", key, v)}
	}
	h.publish("customer", key, 1, fields(1))
	c := h.waitCoupled("customer", key, 1)

	// The next request (v2's update) is carried out 4s after it arrived; the client gives up after
	// 300ms and the worker sends v2 again.
	if err := h.emu.InjectFault(emulator.Fault{Kind: "slow", Delay: 4 * time.Second, Count: 1}); err != nil {
		t.Fatal(err)
	}
	h.publish("customer", key, 2, fields(2))
	h.waitCoupled("customer", key, 2)
	for v := 3; v <= 5; v++ {
		h.publish("customer", key, int64(v), fields(v))
	}
	h.waitCoupled("customer", key, 5)
	if h.emu.InFlight() == 0 {
		t.Fatal("the slow request landed before v5 synced: the test did not exercise a late write")
	}
	h.eventually("the abandoned write has landed", func() bool { return h.emu.InFlight() == 0 })
	if row := h.emu.Row("accounts", c.RowID); row["name"] != key+" v5" {
		t.Fatalf("row name %q after the late write landed, want %q", row["name"], key+" v5")
	}
}

// A change too large to embed in its error event is still reported: the error event carries a
// reference to it in the stream instead of its bytes.
func TestALargeFailingChangeIsReported(t *testing.T) {
	h := start(t, 1)
	key := h.key("BIG")
	// vendor is known but not mapped: a setup error, for a change of 6.5 MB (the test server takes
	// 8 MiB messages; the change's bytes in its error event would not fit).
	h.publish("vendor", key, 1, map[string]any{"number": key, "description": strings.Repeat("x", 6500<<10)})
	e := h.waitError("vendor", key, domain.KindMappingMissing)
	if e.Delivery.Sequence == 0 || e.Delivery.Stream != natsjs.ChangesStream {
		t.Fatalf("stored error %+v does not say where the change is", e.Delivery)
	}
}

// A person edited the row in Dataverse since dvsync's last write: the mapping is one-way, so the
// next change of the record overwrites it (on the row's new version), and the overwrite is counted.
func TestARowEditedInDataverseIsOverwrittenByTheNextChange(t *testing.T) {
	h := start(t, 1)
	key := h.key("EDIT")
	h.publish("customer", key, 1, map[string]any{"number": isoCode(key), "displayName": "v1"})
	c := h.waitCoupled("customer", key, 1)
	if err := h.emu.ChangeRow("accounts", c.RowID, map[string]any{"name": "edited in Dataverse"}); err != nil {
		t.Fatal(err)
	}
	h.publish("customer", key, 2, map[string]any{"number": isoCode(key), "displayName": "v2"})
	h.waitCoupled("customer", key, 2)
	if row := h.emu.Row("accounts", c.RowID); row["name"] != "v2" {
		t.Fatalf("row name %q, want v2", row["name"])
	}
	if n := testutil.ToFloat64(h.workers[0].metrics.Overwrites.WithLabelValues("customer")); n != 1 {
		t.Fatalf("dvsync_overwrites_total = %v, want 1", n)
	}
}

// A worker told to stop while Dataverse hangs stops within its shutdown grace, and gives the
// change back so that another worker takes it at once (not after the ack wait).
func TestAWorkerStopsWhileDataverseHangsAndGivesItsChangeBack(t *testing.T) {
	h := start(t, 0)
	cfg := h.cfg
	cfg.Worker.ShutdownGrace = 300 * time.Millisecond
	cfg.Dataverse.RequestTimeout = time.Minute // only the shutdown grace can end the hanging call
	s := newStack(cfg, h.projector.log)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	if err := connectAll(ctx, s, true); err != nil {
		t.Fatal(err)
	}
	defer s.close()
	done := make(chan error, 1)
	go func() { done <- s.runWorker(ctx) }()
	select { // the hang is meant for the change's request, not the setup check's
	case <-s.startChecked:
	case err := <-done:
		t.Fatalf("the worker stopped at start: %v", err)
	}

	if err := h.emu.InjectFault(emulator.Fault{Kind: "slow", Delay: 20 * time.Second, Count: 1}); err != nil {
		t.Fatal(err)
	}
	key := h.key("HANG")
	h.publish("customer", key, 1, map[string]any{"number": isoCode(key), "displayName": "v1"})
	h.eventually("the worker's request hangs in Dataverse", func() bool { return h.emu.InFlight() > 0 })
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("worker: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the worker did not stop while Dataverse hung")
	}
	// The change was nak'd, not left to the 30 s ack wait: a new worker syncs it well before.
	h.emu.ClearFaults()
	h2 := newStack(cfg, h.projector.log)
	ctx2, stop2 := context.WithCancel(context.Background())
	if err := connectAll(ctx2, h2, true); err != nil {
		t.Fatal(err)
	}
	done2 := make(chan error, 1)
	go func() { done2 <- h2.runWorker(ctx2) }()
	defer func() { stop2(); <-done2; h2.close() }()
	deadline := time.Now().Add(10 * time.Second)
	for c := h.coupling("customer", key); !c.Coupled(); c = h.coupling("customer", key) {
		if time.Now().After(deadline) {
			t.Fatal("the change was not given back: it waits for the ack wait")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
