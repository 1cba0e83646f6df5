package syncworker

import (
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeMsg counts InProgress calls; the other methods are not called.
type fakeMsg struct {
	jetstream.Msg
	inProgress atomic.Int32
}

func (m *fakeMsg) InProgress() error { m.inProgress.Add(1); return nil }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// Every message a worker holds is kept alive until it is released, and only until then.
func TestHeldMessagesAreKeptAliveUntilReleased(t *testing.T) {
	h := newHeartbeat(5*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer h.stop()
	first, second := &fakeMsg{}, &fakeMsg{}
	h.hold(first)
	waitFor(t, "InProgress for the held message", func() bool { return first.inProgress.Load() >= 3 })
	h.release(first)
	released := first.inProgress.Load()
	h.hold(second)
	waitFor(t, "InProgress for the second message", func() bool { return second.inProgress.Load() >= 3 })
	if n := first.inProgress.Load(); n > released+1 {
		t.Fatalf("%d InProgress after release, want at most one tick in flight", n-released)
	}
}
