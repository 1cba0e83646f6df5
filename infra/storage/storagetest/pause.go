package storagetest

import (
	"context"
	"testing"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/infra/storage"
)

// A table's pause, resume and catch-up are stored once per change of state, each audited.
func testPauseResumeAndCatchUpAreStoredAndAudited(t *testing.T, h Harness) {
	s := h.Open(t, 0)
	ctx := context.Background()
	table := "p" + uuid.NewString()[:8]
	actor := "ada-" + table
	state := func() (storage.TableState, bool) {
		t.Helper()
		all, err := s.TableStates(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range all {
			if st.Table == table {
				return st, true
			}
		}
		return storage.TableState{}, false
	}
	audited := func() int {
		t.Helper()
		entries, err := s.Audit(ctx, 200)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range entries {
			if e.Actor == actor {
				n++
			}
		}
		return n
	}

	catchUp := func() (storage.BacklogPeriod, bool) {
		t.Helper()
		all, err := s.BacklogPeriods(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range all {
			if p.Table == table {
				return p, true
			}
		}
		return storage.BacklogPeriod{}, false
	}

	if changed, err := s.ResumeTable(ctx, table, actor, 3, 1); err != nil || changed {
		t.Fatalf("resuming a table never paused = %v, %v; want nothing changed", changed, err)
	}
	if _, ok := state(); ok {
		t.Fatal("a table never paused has a state")
	}
	if _, ok := catchUp(); ok {
		t.Fatal("resuming a table never paused opened a catch-up")
	}
	if changed, err := s.PauseTable(ctx, table, actor); err != nil || !changed {
		t.Fatalf("pause = %v, %v", changed, err)
	}
	first, ok := state()
	if !ok || !first.Paused || first.By != actor || first.Since.IsZero() {
		t.Fatalf("after pause: %+v, %v", first, ok)
	}
	if changed, err := s.PauseTable(ctx, table, "someone else"); err != nil || changed {
		t.Fatalf("pausing again = %v, %v; want nothing changed", changed, err)
	}
	if again, _ := state(); !again.Since.Equal(first.Since) || again.By != actor {
		t.Fatalf("a second pause moved the state: %+v, was %+v", again, first)
	}
	if changed, err := s.ResumeTable(ctx, table, actor, 42, 17); err != nil || !changed {
		t.Fatalf("resume = %v, %v", changed, err)
	}
	st, _ := state()
	if st.Paused || st.Since.Before(first.Since) {
		t.Fatalf("after resume: %+v", st)
	}
	// The resume opened the catch-up: a backlog period of what waited.
	if p, ok := catchUp(); !ok || p.Kind != storage.BacklogCatchingUp || p.Total != 42 || p.Left != 42 || p.Done != 0 || p.StartSeq != 17 {
		t.Fatalf("the catch-up after resume = %+v, %v", p, ok)
	}
	// A pause ends it; a resume with nothing waiting has no catch-up.
	if _, err := s.PauseTable(ctx, table, actor); err != nil {
		t.Fatal(err)
	}
	if p, ok := catchUp(); ok {
		t.Fatalf("a pause left the catch-up open: %+v", p)
	}
	if _, err := s.ResumeTable(ctx, table, actor, 0, 20); err != nil {
		t.Fatal(err)
	}
	if st, _ := state(); st.Paused {
		t.Fatalf("resumed with nothing waiting: %+v", st)
	}
	if p, ok := catchUp(); ok {
		t.Fatalf("a resume with nothing waiting opened a catch-up: %+v", p)
	}
	if n := audited(); n != 4 {
		t.Fatalf("%d audit entries by %s, want 4 (pause, resume, pause, resume)", n, actor)
	}
}
