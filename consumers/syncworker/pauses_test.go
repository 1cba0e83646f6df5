package syncworker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"
)

// A starting worker reads the paused tables until it can: a store briefly away must not make it
// handle a paused table's changes as if none were paused.
func TestAStartingWorkerWaitsForThePausedTables(t *testing.T) {
	calls := 0
	p := &Pauses{Every: time.Second, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Load: func(context.Context) (map[string]bool, map[string]time.Time, error) {
			calls++
			if calls < 3 {
				return nil, nil, errors.New("store away")
			}
			return map[string]bool{"currency": true}, nil, nil
		}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.loadFirst(ctx); err != nil || calls != 3 || !p.Paused("currency") {
		t.Fatalf("loadFirst: %v after %d reads, currency paused %v; want the third read's view", err, calls, p.Paused("currency"))
	}
	stopped, stop := context.WithCancel(context.Background())
	stop()
	p.Load = func(context.Context) (map[string]bool, map[string]time.Time, error) {
		return nil, nil, errors.New("store away")
	}
	if err := p.loadFirst(stopped); !errors.Is(err, context.Canceled) {
		t.Fatalf("loadFirst of a stopping worker: %v, want it to give up", err)
	}
}
