package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/dvsync/dvsync/infra/natsjs"
	"github.com/dvsync/dvsync/internal/testbed"
)

// Scenario is one fault, injected while the load runs, from a clean state.
type Scenario struct {
	Name  string
	About string
	Nodes int  // nats-server processes: 1, or 3 in a cluster with R3 streams
	Flood bool // the load carries the malformed and hostile messages
	// Budget, when set, is the longest recovery accepted.
	Budget time.Duration
	// Latency is added to every Dataverse request, so that the workers always have changes in
	// flight when the fault hits.
	Latency time.Duration
	// Fault runs beside the load and returns when the fault is over (its end may be in the
	// future: a late write lands after its delay).
	Fault func(ctx context.Context, e *Env) (end time.Time, err error)
	// Late, when set, runs once the late currency is published, beside the automatic replays.
	Late func(ctx context.Context, e *Env) error
}

// defaultBudget is the longest recovery a scenario accepts unless it says otherwise: a crash
// should cost about the consumer's AckWait (issue 8 asks for 30 s or less), not minutes.
const defaultBudget = 60 * time.Second

// Scenarios are every scenario, in the order they run.
func Scenarios() []Scenario {
	return []Scenario{
		{Name: "baseline", About: "no fault: the load alone", Fault: afterLoad},
		{Name: "worker-kill9", About: "kill -9 of a worker, again and again, during the load; each restarted",
			Latency: 50 * time.Millisecond, Fault: killWorkers},
		{Name: "nats-restart", About: "nats-server stopped during the load and restarted on its store",
			Latency: 50 * time.Millisecond, Fault: restartNATS},
		{Name: "postgres-restart", About: "PostgreSQL stopped (-m immediate) during the load, then started", Fault: restartPostgres},
		{Name: "dataverse-outage", About: "Dataverse answers 503 to everything for a while", Fault: outage},
		{Name: "dataverse-429", About: "a 429 storm: service-protection limits far below the load", Fault: throttle},
		{Name: "late-writes", About: "writes that land after the client gave up (the emulator's slow fault)", Fault: lateWrites},
		{Name: "projector-kill9", About: "kill -9 of the projector, again and again, while errors flow and while it replays; each restarted",
			Budget: 90 * time.Second, Fault: killProjector, Late: killProjectorReplaying},
		{Name: "nats-node-loss", About: "a 3-node NATS cluster with R3 streams loses the node leading the changes and errors streams (kill -9)",
			Nodes: 3, Latency: 50 * time.Millisecond, Fault: loseNATSNode},
		{Name: "poison-flood", About: "malformed and hostile messages among the load", Flood: true, Fault: afterLoad},
	}
}

// afterLoad is no fault: it ends with the load.
func afterLoad(ctx context.Context, e *Env) (time.Time, error) {
	err := e.WaitLoad(ctx)
	return time.Now(), err
}

// killWorkers kills a worker with SIGKILL at points of the load (the last after all of it is
// published, while the workers still drain it) and starts it again at once, as a supervisor
// would.
func killWorkers(ctx context.Context, e *Env) (time.Time, error) {
	points := []float64{0.2, 0.4, 0.6, 0.8, 1.0}
	for i, at := range points[len(points)-e.P.Kills:] {
		if err := e.Loader.WaitProgress(ctx, at); err != nil {
			return time.Time{}, err
		}
		// With changes in flight: those are what a crash puts at risk.
		_ = testbed.WaitFor(ctx, 10*time.Second, 20*time.Millisecond, func() bool {
			return e.ackPending(ctx, natsjs.ChangesStream, natsjs.WorkerConsumer) >= 2
		})
		w := e.Workers[i%len(e.Workers)]
		w.Kill()
		if err := e.Restart(ctx, w); err != nil {
			return time.Time{}, err
		}
	}
	return time.Now(), nil
}

// killProjector kills the projector while it has work: at points of the load it is killed, kept
// down while errors pile up, started, and killed again as soon as errors are delivered to it and
// not acknowledged (twice), then started for good.
func killProjector(ctx context.Context, e *Env) (time.Time, error) {
	points := []float64{0.2, 0.4, 0.6, 0.8, 1.0}
	for _, at := range points[len(points)-e.P.Kills:] {
		if err := e.Loader.WaitProgress(ctx, at); err != nil {
			return time.Time{}, err
		}
		e.Projector.Kill()
		if err := testbed.Sleep(ctx, e.P.Down); err != nil {
			return time.Time{}, err
		}
		for range 2 {
			if err := e.Restart(ctx, e.Projector); err != nil {
				return time.Time{}, err
			}
			// Once the piled-up errors are delivered to it, and before it acknowledged them all.
			_ = testbed.WaitFor(ctx, 10*time.Second, 10*time.Millisecond, func() bool {
				return e.ackPending(ctx, natsjs.ErrorsStream, natsjs.ProjectorConsumer) > 0
			})
			e.Projector.Kill()
		}
		if err := e.Restart(ctx, e.Projector); err != nil {
			return time.Time{}, err
		}
	}
	return time.Now(), nil
}

// killProjectorReplaying kills the projector as soon as the first automatic replay is recorded,
// while it replays the records that waited for the late currency, and starts it again.
func killProjectorReplaying(ctx context.Context, e *Env) error {
	err := testbed.WaitFor(ctx, time.Minute, 20*time.Millisecond, func() bool {
		var started bool
		err := e.DB.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM sync_error_replays)`).Scan(&started)
		return err == nil && started
	})
	if err != nil {
		return fmt.Errorf("no replay started: %w", err)
	}
	e.Projector.Kill()
	return e.Restart(ctx, e.Projector)
}

func restartNATS(ctx context.Context, e *Env) (time.Time, error) {
	if err := e.Loader.WaitProgress(ctx, 0.4); err != nil {
		return time.Time{}, err
	}
	n := e.Nodes[0]
	n.Proc.Stop(30 * time.Second)
	if err := testbed.Sleep(ctx, e.P.Down); err != nil {
		return time.Time{}, err
	}
	if err := n.Proc.Restart(); err != nil {
		return time.Time{}, err
	}
	return time.Now(), testbed.WaitJetStream(ctx, e.Nodes, e.Auth, 60*time.Second)
}

func restartPostgres(ctx context.Context, e *Env) (time.Time, error) {
	if err := e.Loader.WaitProgress(ctx, 0.4); err != nil {
		return time.Time{}, err
	}
	if err := e.PG.Crash(ctx); err != nil {
		return time.Time{}, err
	}
	if err := testbed.Sleep(ctx, e.P.Down); err != nil {
		return time.Time{}, err
	}
	if err := e.PG.Start(ctx); err != nil {
		return time.Time{}, err
	}
	return time.Now(), nil
}

func outage(ctx context.Context, e *Env) (time.Time, error) {
	if err := e.Loader.WaitProgress(ctx, 0.3); err != nil {
		return time.Time{}, err
	}
	if err := e.Emu.Admin(ctx, http.MethodPost, "/_emulator/faults", map[string]any{"kind": "outage", "for": e.P.Outage.String()}); err != nil {
		return time.Time{}, err
	}
	end := time.Now().Add(e.P.Outage)
	if err := testbed.Sleep(ctx, e.P.Outage); err != nil {
		return time.Time{}, err
	}
	return end, e.Emu.Admin(ctx, http.MethodDelete, "/_emulator/faults", nil)
}

func throttle(ctx context.Context, e *Env) (time.Time, error) {
	if err := e.Loader.WaitProgress(ctx, 0.3); err != nil {
		return time.Time{}, err
	}
	storm := map[string]any{"window": "10s", "requests": 50, "concurrent": 4, "dopHint": 2}
	if err := e.Emu.Admin(ctx, http.MethodPost, "/_emulator/limits", storm); err != nil {
		return time.Time{}, err
	}
	if err := testbed.Sleep(ctx, e.P.Throttle); err != nil {
		return time.Time{}, err
	}
	return time.Now(), e.Emu.Admin(ctx, http.MethodPost, "/_emulator/limits", testbed.GenerousLimits)
}

// lateWrites delays every request that reaches Dataverse within a short window by longer than
// dvsync's client waits (30 s): the emulator applies each one when its delay is over, long after
// dvsync gave up on it and went on to the record's newer versions. Every delayed request arrived
// within the window, so the last has landed once the window and the delay are over.
func lateWrites(ctx context.Context, e *Env) (time.Time, error) {
	if err := e.Loader.WaitProgress(ctx, 0.3); err != nil {
		return time.Time{}, err
	}
	start := time.Now()
	slow := map[string]any{"kind": "slow", "delay": e.P.SlowDelay.String()} // no count: every request
	if err := e.Emu.Admin(ctx, http.MethodPost, "/_emulator/faults", slow); err != nil {
		return time.Time{}, err
	}
	err := testbed.Sleep(ctx, e.P.SlowWindow)
	// Cleared even when interrupted: a slow fault left behind would delay the next scenario.
	if cerr := e.Emu.Admin(context.WithoutCancel(ctx), http.MethodDelete, "/_emulator/faults", nil); err == nil {
		err = cerr
	}
	return start.Add(e.P.SlowWindow + e.P.SlowDelay + 2*time.Second), err
}

// loseNATSNode kills the node leading the changes stream (and the errors stream); it stays down.
func loseNATSNode(ctx context.Context, e *Env) (time.Time, error) {
	if err := e.Loader.WaitProgress(ctx, 0.4); err != nil {
		return time.Time{}, err
	}
	leader, err := streamLeader(ctx, e.JS, natsjs.ChangesStream)
	if err != nil {
		return time.Time{}, err
	}
	// The errors stream's leader goes down with it where it can: the workers' error events then
	// fail for a while too, so that a record's first stored error may be a later, skipped one (a
	// window that lost records once, found only when both leaders happened to share the node).
	if err := colocateLeader(ctx, e.JS, natsjs.ErrorsStream, leader); err != nil {
		return time.Time{}, err
	}
	for _, n := range e.Nodes {
		if n.Name == leader {
			n.Proc.Kill()
			return time.Now(), nil
		}
	}
	return time.Time{}, fmt.Errorf("the leader %q of %s is none of the nodes", leader, natsjs.ChangesStream)
}

// colocateLeader asks stream name's leader to step down until the node leading is want; each
// step-down elects a random peer, so a few tries suffice (R3).
func colocateLeader(ctx context.Context, js jetstream.JetStream, name, want string) error {
	for range 20 {
		leader, err := streamLeader(ctx, js, name)
		if err != nil {
			return err
		}
		if leader == want {
			return nil
		}
		if _, err := js.Conn().RequestWithContext(ctx, "$JS.API.STREAM.LEADER.STEPDOWN."+name, nil); err != nil {
			return fmt.Errorf("step down the leader of %s: %w", name, err)
		}
		// The step-down answers before the new leader is elected: wait until another leads.
		if err := testbed.WaitFor(ctx, 30*time.Second, 200*time.Millisecond, func() bool {
			l, err := streamLeader(ctx, js, name)
			return err == nil && l != leader
		}); err != nil {
			return fmt.Errorf("a new leader of %s: %w", name, err)
		}
	}
	return fmt.Errorf("the leader of %s did not move to %s in 20 step-downs", name, want)
}

func streamLeader(ctx context.Context, js jetstream.JetStream, name string) (string, error) {
	var leader string
	err := testbed.WaitFor(ctx, 30*time.Second, 200*time.Millisecond, func() bool {
		s, err := js.Stream(ctx, name)
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		if err != nil || info.Cluster == nil {
			return false
		}
		leader = info.Cluster.Leader
		return leader != ""
	})
	if err != nil {
		return "", errors.Join(fmt.Errorf("no leader of %s", name), err)
	}
	return leader, nil
}
