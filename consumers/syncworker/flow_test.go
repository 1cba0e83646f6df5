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

func TestCredentialsAreScrubbedByHeaderNameAndByValue(t *testing.T) {
	in := map[string][]string{
		"Authorization":  {"Bearer abc"},
		"Authentication": {"Bearer abc"},
		"X-Auth":         {"Bearer abc"},
		"X-Forwarded":    {"bearer abc.def"},
		"X-Basic":        {"Basic dXNlcjpwYXNz"},
		"X-Jwt":          {"eyJhbGciOi.eyJzdWIiOi.sig"},
		"X-Api-Key":      {"k"},
		"Password":       {"p"},
		"Traceparent":    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		"Ce-Source":      {"bc://cronus"},
	}
	out := scrubHeaders(in)
	for _, k := range []string{"Authorization", "Authentication", "X-Auth", "X-Forwarded", "X-Basic", "X-Jwt", "X-Api-Key", "Password"} {
		if out[k][0] != "(removed)" {
			t.Errorf("%s: %q kept", k, out[k][0])
		}
	}
	for _, k := range []string{"Traceparent", "Ce-Source"} {
		if out[k][0] != in[k][0] {
			t.Errorf("%s: %q changed to %q", k, in[k][0], out[k][0])
		}
	}
}

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
