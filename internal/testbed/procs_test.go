package testbed

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestPickKeepsTheNamedOrderAndNamesAnUnknownOne(t *testing.T) {
	all := []string{"raw", "naive", "drain"}
	got, err := Pick(all, "drain, raw", func(s string) string { return s })
	if err != nil || strings.Join(got, ",") != "drain,raw" {
		t.Fatalf("Pick = %v, %v; want [drain raw]", got, err)
	}
	if _, err := Pick(all, "raw,nope", func(s string) string { return s }); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("an unknown name: %v", err)
	}
}

// A process that dies without being asked is reported; one stopped is not; a stopped one restarts.
func TestSupervisorTellsAskedFromUnaskedExits(t *testing.T) {
	sup := &Supervisor{}
	defer sup.StopAll(time.Second)
	log := filepath.Join(t.TempDir(), "p.log")
	p, err := sup.Start("sleeper", log, ChildEnv(), "/bin/sh", "-c", "sleep 60")
	if err != nil {
		t.Fatal(err)
	}
	if !p.Running() || p.Pid() == 0 {
		t.Fatalf("running %v, pid %d", p.Running(), p.Pid())
	}
	// Killed from outside: an exit nobody asked for.
	if err := syscall.Kill(-p.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := WaitFor(context.Background(), 10*time.Second, 10*time.Millisecond, func() bool { return !p.Running() }); err != nil {
		t.Fatal(err)
	}
	if exits := sup.Exits(); len(exits) != 1 || !strings.Contains(exits[0], "sleeper") {
		t.Fatalf("exits = %q, want the sleeper's", exits)
	}
	p.ForgetExits()
	if err := p.Restart(); err != nil {
		t.Fatal(err)
	}
	p.Stop(5 * time.Second)
	if p.Running() || len(sup.Exits()) != 0 {
		t.Fatalf("after Stop: running %v, exits %q", p.Running(), sup.Exits())
	}
	data, err := os.ReadFile(log)
	if err != nil || strings.Count(string(data), "=== testbed: start sleeper") != 2 {
		t.Fatalf("log %q (%v) does not record both starts", data, err)
	}
}
