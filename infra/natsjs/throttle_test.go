package natsjs_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/dvsync/dvsync/infra/natsjs"
)

// lockedBuffer is a bytes.Buffer that a NATS callback may write while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

func connectOpen(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func notice(until time.Time, instance string) []byte {
	b, _ := json.Marshal(map[string]any{"until": until, "instance": instance})
	return b
}

// waitHold returns the next until passed to a hold function, or fails after a deadline.
func waitHold(t *testing.T, holds <-chan time.Time) time.Time {
	t.Helper()
	select {
	case u := <-holds:
		return u
	case <-time.After(5 * time.Second):
		t.Fatal("no throttle notice was held within 5s")
		return time.Time{}
	}
}

func TestThrottleNoticesAreBoundedAndMalformedOnesIgnored(t *testing.T) {
	srv, err := natsjs.StartEmbedded("127.0.0.1", -1, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	worker, other := connectOpen(t, srv.ClientURL()), connectOpen(t, srv.ClientURL())

	var logs lockedBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	holds := make(chan time.Time, 16)
	share, err := natsjs.ShareThrottle(worker, "app-1", func(u time.Time) { holds <- u }, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = share.Stop() })
	if err := worker.Flush(); err != nil { // the subscription is in place before anything is sent
		t.Fatal(err)
	}

	subject := natsjs.ThrottleSubject("app-1")
	now := time.Now()
	const marker = "PAYLOAD-MARKER"
	for _, data := range [][]byte{
		notice(time.Date(2999, 1, 1, 0, 0, 0, 0, time.UTC), "forger"), // would hold every worker for ever
		notice(now.Add(natsjs.MaxThrottleNotice+time.Minute), "forger"),
		[]byte(`{"until":` + marker),                            // not JSON
		[]byte(`{"instance":"forger","note":"` + marker + `"}`), // no until
		append([]byte(`{"until":"`+now.Add(time.Minute).Format(time.RFC3339Nano)+`","x":"`), bytes.Repeat([]byte("A"), 4096)...),
		notice(now.Add(-time.Second), "late"), // expired on its way: dropped, not counted
	} {
		if err := other.Publish(subject, data); err != nil {
			t.Fatal(err)
		}
	}
	// A notice within the bound is held; published last on the same connection, it arrives last.
	want := now.Add(30 * time.Second)
	if err := other.Publish(subject, notice(want, "peer")); err != nil {
		t.Fatal(err)
	}
	if got := waitHold(t, holds); !got.Equal(want) {
		t.Fatalf("held until %s; the first notice held must be the valid one, %s", got, want)
	}
	if n := share.Ignored(); n != 5 {
		t.Fatalf("%d notices counted as ignored, want 5 (far ahead twice, not JSON, no until, oversized): %s", n, logs.String())
	}
	out := logs.String()
	if strings.Contains(out, marker) || strings.Contains(out, "AAAA") {
		t.Fatalf("a notice's bytes were logged: %s", out)
	}
	if c := strings.Count(out, `"level":"WARN"`); c != 1 {
		t.Fatalf("%d warnings for a burst of ignored notices, want 1 (at most one a minute): %s", c, out)
	}
	if strings.Count(out, "throttle notice ignored") != 5 || !strings.Contains(out, "more than 6m0s ahead") {
		t.Fatalf("each ignored notice is logged at debug with its reason: %s", out)
	}

	// Its own notices are not held; the others' are, in order.
	share.Notify(now.Add(time.Minute))
	peer := now.Add(45 * time.Second)
	if err := worker.Publish(subject, notice(peer, "peer")); err != nil {
		t.Fatal(err)
	}
	if got := waitHold(t, holds); !got.Equal(peer) {
		t.Fatalf("held until %s; a process must not hold on its own notice (want the peer's %s)", got, peer)
	}
}
