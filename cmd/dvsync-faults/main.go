// Command dvsync-faults is dvsync's own fault suite: it runs dvsync as separate processes built
// from this checkout (two workers, the projector, serve, the emulator) on real nats-server and
// PostgreSQL processes it starts itself, injects one fault per scenario while a load of
// customer changes runs, and checks that Dataverse ends up holding the newest version of every
// record, once, that every bad message is in the errors ledger, and that nothing is left stuck.
// README.md ("Fault suite") says what it proves.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dvsync/dvsync/infra/natsjs"
	"github.com/dvsync/dvsync/internal/testbed"
)

// Profile sizes the load and the faults.
type Profile struct {
	Name                string
	Customers, Versions int
	Rate                float64 // messages published per second
	Flood               Flood
	Kills               int // kill -9s per kill scenario
	Down                time.Duration
	Outage, Throttle    time.Duration
	SlowDelay           time.Duration // longer than dvsync's 30 s client timeout
	SlowWindow          time.Duration // requests arriving within it are delayed
	Settle              Settle
}

var profiles = map[string]Profile{
	"full": {Name: "full", Customers: 2000, Versions: 5, Rate: 250, Flood: Flood{Invalid: 10, Ledger: 25, Lane: 3, Huge: 2}, Kills: 4,
		Down: 10 * time.Second, Outage: 20 * time.Second, Throttle: 25 * time.Second, SlowDelay: 60 * time.Second, SlowWindow: 500 * time.Millisecond,
		Settle: Settle{Quiet: 10 * time.Second, Stuck: 150 * time.Second, Deadline: 8 * time.Minute}},
	"short": {Name: "short", Customers: 300, Versions: 3, Rate: 150, Flood: Flood{Invalid: 3, Ledger: 22, Lane: 2, Huge: 1}, Kills: 2,
		Down: 5 * time.Second, Outage: 10 * time.Second, Throttle: 12 * time.Second, SlowDelay: 45 * time.Second, SlowWindow: 500 * time.Millisecond,
		Settle: Settle{Quiet: 8 * time.Second, Stuck: 90 * time.Second, Deadline: 4 * time.Minute}},
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dvsync-faults", flag.ContinueOnError)
	fs.SetOutput(stderr)
	profile := fs.String("profile", "full", "load and fault sizes: full or short")
	only := fs.String("scenario", "", "run only these scenarios (comma-separated names)")
	keep := fs.Bool("keep", false, "keep logs, NATS stores and databases (the PostgreSQL cluster is stopped, not dropped)")
	list := fs.Bool("list", false, "list the scenarios and exit")
	seed := fs.Uint64("seed", 0, "seed of the load's order (0: random)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	p, ok := profiles[*profile]
	if !ok {
		fmt.Fprintf(stderr, "dvsync-faults: unknown profile %q (full or short)\n", *profile)
		return 2
	}
	scenarios := Scenarios()
	if *list {
		for _, s := range scenarios {
			fmt.Fprintf(stdout, "%-18s %s\n", s.Name, s.About)
		}
		return 0
	}
	if *only != "" {
		var err error
		if scenarios, err = testbed.Pick(scenarios, *only, func(s Scenario) string { return s.Name }); err != nil {
			fmt.Fprintf(stderr, "dvsync-faults: %v\n", err)
			return 2
		}
	}
	if *seed == 0 {
		b := make([]byte, 8)
		_, _ = rand.Read(b)
		for _, c := range b {
			*seed = *seed<<8 | uint64(c)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second Ctrl-C ends the suite at once (children die with it: Pdeathsig)
	}()

	r := &Runner{P: p, Keep: *keep, Seed: *seed, Out: stdout}
	start := time.Now()
	results, err := r.Run(ctx, scenarios)
	if err != nil {
		fmt.Fprintf(stderr, "dvsync-faults: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "\nprofile %s, seed %d, %d scenarios in %s\n\n", p.Name, r.Seed, len(results), time.Since(start).Round(time.Second))
	PrintTable(stdout, results)
	failed := slices.ContainsFunc(results, func(r Result) bool { return !r.Passed() })
	switch {
	case failed || r.Keep:
		fmt.Fprintf(stdout, "\nlogs: %s\n", filepath.Join(r.tmp, "logs"))
	default:
		_ = os.RemoveAll(r.tmp)
	}
	if ctx.Err() != nil {
		return 130
	}
	if failed {
		return 1
	}
	return 0
}

// Runner runs scenarios on one PostgreSQL cluster and one emulator.
type Runner struct {
	P    Profile
	Keep bool
	Seed uint64
	Out  io.Writer

	tmp      string
	dvsync   string
	natsBin  string
	pg       *testbed.PGCluster
	emu      *testbed.Emulator
	sup      *testbed.Supervisor
	scenario int
}

// Run builds the binaries, starts PostgreSQL and the emulator, runs each scenario and removes
// everything it started.
func (r *Runner) Run(ctx context.Context, scenarios []Scenario) ([]Result, error) {
	var err error
	if r.tmp, err = os.MkdirTemp("", "dvsync-faults-"); err != nil {
		return nil, err
	}
	fmt.Fprintf(r.Out, "dvsync-faults: profile %s, working in %s\n", r.P.Name, r.tmp)
	bins, err := testbed.Build(ctx, filepath.Join(r.tmp, "bin"))
	if err != nil {
		return nil, err
	}
	r.dvsync, r.natsBin = bins.Dvsync, bins.NATSServer
	r.sup = &testbed.Supervisor{}
	defer r.sup.StopAll(5 * time.Second)
	if r.pg, err = testbed.CreatePG(ctx, "dvsync_faults"); err != nil {
		return nil, err
	}
	defer func() {
		cleanup := context.WithoutCancel(ctx)
		if r.Keep {
			_ = r.pg.Stop(cleanup)
			fmt.Fprintf(r.Out, "PostgreSQL cluster kept (stopped): pg_dropcluster %s %s\n", r.pg.Version, r.pg.Name)
			return
		}
		if err := r.pg.Drop(cleanup); err != nil {
			fmt.Fprintf(r.Out, "dvsync-faults: %v\n", err)
		}
	}()
	fmt.Fprintf(r.Out, "PostgreSQL %s cluster %s on 127.0.0.1:%d\n", r.pg.Version, r.pg.Name, r.pg.Port)
	if err := r.startEmulator(ctx); err != nil {
		return nil, err
	}
	var results []Result
	for _, sc := range scenarios {
		if ctx.Err() != nil {
			break
		}
		fmt.Fprintf(r.Out, "\n== %s: %s\n", sc.Name, sc.About)
		started := time.Now()
		res := r.runScenario(ctx, sc)
		fmt.Fprintf(r.Out, "== %s: %s in %s (events %d, lost %d, duplicated %d, stale %d, stuck %d, ledger %d, recovery %s s)\n",
			sc.Name, res.verdict(), time.Since(started).Round(time.Second), res.Events, res.Report.Lost, res.Report.Duplicated,
			res.Report.Stale, res.Report.Stuck, res.Report.Ledger, res.recovery())
		results = append(results, res)
	}
	return results, nil
}

func (r *Runner) startEmulator(ctx context.Context) error {
	var err error
	r.emu, err = testbed.StartEmulator(ctx, r.sup, r.dvsync, filepath.Join(r.tmp, "logs", "emulator.log"))
	return err
}

// Env is one scenario's running system.
type Env struct {
	P         Profile
	PG        *testbed.PGCluster
	Emu       *testbed.Emulator
	Nodes     []*testbed.NATSNode
	Auth      testbed.NATSAuth
	Workers   []*testbed.Proc
	Projector *testbed.Proc
	Serve     *testbed.Proc
	JS        jetstream.JetStream // as dvsync's user
	PubJS     jetstream.JetStream // as a publisher
	DB        *pgxpool.Pool
	Obs       *Observer
	Loader    *Loader

	sup      *testbed.Supervisor
	data, db string
	closers  []func()
	health   map[*testbed.Proc]string
	loadDone chan struct{}
	loadErr  error
}

// ackPending is how many messages the consumers of stream named prefix… have delivered and not
// had acknowledged (0 when they cannot be read).
func (e *Env) ackPending(ctx context.Context, stream, prefix string) int {
	n := 0
	for _, b := range e.Obs.backlog(ctx, stream, prefix) {
		n += int(b.AckPending)
	}
	return n
}

// Restart starts a stopped dvsync process again and waits until it is healthy.
func (e *Env) Restart(ctx context.Context, p *testbed.Proc) error {
	if err := p.Restart(); err != nil {
		return err
	}
	return testbed.WaitHealthy(ctx, p, e.health[p], 60*time.Second)
}

// WaitLoad returns once the load is published.
func (e *Env) WaitLoad(ctx context.Context) error {
	select {
	case <-e.loadDone:
		return e.loadErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// runScenario starts a clean system, runs the load with the fault, and checks the outcome.
func (r *Runner) runScenario(ctx context.Context, sc Scenario) Result {
	r.scenario++
	if sc.Budget == 0 {
		sc.Budget = defaultBudget
	}
	if sc.Nodes == 0 {
		sc.Nodes = 1
	}
	res := Result{Scenario: sc.Name, Budget: sc.Budget, Logs: filepath.Join(r.tmp, "logs", sc.Name)}
	e, err := r.start(ctx, sc, &res)
	defer e.stop(context.WithoutCancel(ctx), r.Keep)
	if err == nil {
		err = r.exercise(ctx, sc, e, &res)
	}
	res.Err = err
	return res
}

// start brings up a scenario's system from a clean state: NATS, a database, the emulator reset,
// the dvsync processes, and the suite's own connections. The returned Env is stopped by its
// stop, also when start fails half-way.
func (r *Runner) start(ctx context.Context, sc Scenario, res *Result) (*Env, error) {
	e := &Env{P: r.P, PG: r.pg, Emu: r.emu, Auth: testbed.NATSAuth{Users: natsjs.NewPasswords(), Route: randomHex(16)},
		sup: &testbed.Supervisor{}, data: filepath.Join(r.tmp, "data", sc.Name), health: map[*testbed.Proc]string{}, loadDone: make(chan struct{})}
	var err error
	if e.Nodes, err = testbed.StartNATS(ctx, e.sup, r.natsBin, e.data, res.Logs, sc.Nodes, e.Auth); err != nil {
		return e, err
	}
	e.db = "faults_" + strings.ReplaceAll(sc.Name, "-", "_")
	if err := r.pg.CreateDB(ctx, e.db); err != nil {
		return e, err
	}
	if err := r.emu.Reset(ctx); err != nil {
		return e, err
	}
	if sc.Latency > 0 {
		if err := r.emu.Admin(ctx, http.MethodPost, "/_emulator/latency", map[string]string{"perRequest": sc.Latency.String()}); err != nil {
			return e, err
		}
	}
	if err := r.startDvsync(ctx, e, sc, res); err != nil {
		return e, err
	}

	// The suite publishes as an upstream system does (the publisher user may publish changes
	// only) and reads the consumers as dvsync's own user.
	connect := func(name, user, password string) (jetstream.JetStream, error) {
		nc, err := nats.Connect(testbed.NATSURLs(e.Nodes, user, password), nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
		if err != nil {
			return nil, err
		}
		e.closers = append(e.closers, nc.Close)
		return jetstream.New(nc)
	}
	if e.PubJS, err = connect("dvsync-faults-publisher", natsjs.PublisherUser, e.Auth.Users.Publisher); err != nil {
		return e, err
	}
	if e.JS, err = connect("dvsync-faults-observer", natsjs.DvsyncUser, e.Auth.Users.Dvsync); err != nil {
		return e, err
	}
	if e.DB, err = pgxpool.New(ctx, r.pg.URL(e.db)); err != nil {
		return e, err
	}
	e.closers = append(e.closers, e.DB.Close)
	e.Obs = &Observer{Emu: r.emu, DB: e.DB, JS: e.JS, Sup: e.sup, Health: func() map[string]string {
		out := map[string]string{}
		for p, url := range e.health {
			out[p.Name] = url
		}
		return out
	}}
	return e, nil
}

// startDvsync starts two workers, the projector and serve, configured by the environment as in
// production, and waits until each is healthy.
func (r *Runner) startDvsync(ctx context.Context, e *Env, sc Scenario, res *Result) error {
	token := "dvs_" + randomHex(24)
	start := func(name, command string) (*testbed.Proc, error) {
		port, err := testbed.FreePort()
		if err != nil {
			return nil, err
		}
		env := testbed.DvsyncEnv(testbed.NATSURLs(e.Nodes, natsjs.DvsyncUser, e.Auth.Users.Dvsync), r.pg.URL(e.db), r.emu, port,
			// Far beyond a scenario: no change may be parked for a transient cause.
			"DVSYNC_RETRY_BUDGET=1h",
			fmt.Sprintf("DVSYNC_NATS_REPLICAS=%d", sc.Nodes),
			"DVSYNC_API_TOKENS=faults:viewer:"+token,
		)
		p, err := e.sup.Start(name, filepath.Join(res.Logs, name+".log"), env, r.dvsync, command)
		if err != nil {
			return nil, err
		}
		e.health[p] = fmt.Sprintf("http://127.0.0.1:%d/healthz", port)
		return p, nil
	}
	// worker-1 first: it creates the streams and the consumer, which the others then find.
	w, err := start("worker-1", "worker")
	if err != nil {
		return err
	}
	e.Workers = append(e.Workers, w)
	if err := r.waitStarted(ctx, e, w, res); err != nil {
		return err
	}
	if w, err = start("worker-2", "worker"); err != nil {
		return err
	}
	e.Workers = append(e.Workers, w)
	if e.Projector, err = start("projector", "projector"); err != nil {
		return err
	}
	if e.Serve, err = start("serve", "serve"); err != nil {
		return err
	}
	for _, p := range []*testbed.Proc{e.Workers[1], e.Projector, e.Serve} {
		if err := r.waitStarted(ctx, e, p, res); err != nil {
			return err
		}
	}
	return nil
}

// stop ends every process of the scenario and, unless keep, drops its database and store.
func (e *Env) stop(ctx context.Context, keep bool) {
	for _, c := range slices.Backward(e.closers) {
		c()
	}
	e.sup.StopAll(10 * time.Second)
	if !keep {
		if e.db != "" {
			_ = e.PG.DropDB(ctx, e.db)
		}
		_ = os.RemoveAll(e.data)
	}
}

// exercise couples the eager currency, runs the load with the fault, waits for the final state,
// couples the late currency and waits again. An error is the suite's own failure.
func (r *Runner) exercise(ctx context.Context, sc Scenario, e *Env, res *Result) error {
	run := fmt.Sprintf("f%d-%s", r.scenario, randomHex(3))
	if err := r.couple(ctx, e, run, eagerCurrency); err != nil {
		return err
	}
	plan := NewPlan(run, r.Seed+uint64(r.scenario), r.P.Customers, r.P.Versions)
	msgs := plan.Good
	if sc.Flood {
		msgs = Interleave(msgs, PoisonMessages(run, r.P.Flood), 0.15, 0.6)
	}
	e.Loader = &Loader{JS: e.PubJS, Msgs: msgs, Rate: r.P.Rate}
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	go func() {
		e.loadErr = e.Loader.Run(loadCtx)
		close(e.loadDone)
	}()
	faultEnd, err := sc.Fault(ctx, e)
	if err != nil {
		return fmt.Errorf("injecting the fault: %w", err)
	}
	if err := e.WaitLoad(ctx); err != nil {
		return fmt.Errorf("publishing the load: %w", err)
	}
	res.Events = e.Loader.Published() + 2 // and the two currencies
	end := time.Now()
	if faultEnd.After(end) {
		end = faultEnd
	}
	fmt.Fprintf(r.Out, "   load of %d messages published; fault over at %s\n", e.Loader.Published(), end.Format("15:04:05"))
	if err := testbed.Sleep(ctx, time.Until(end)); err != nil {
		return err
	}

	exp := Expect{Newest: plan.Newest, Waiting: plan.Waiting, Bad: e.Loader.Bad()}
	mid := Converge(ctx, e.Obs, exp, r.P.Settle)
	res.Recovered, res.Recovery = mid.Final, time.Since(end)
	if mid.Final {
		res.Recovery = mid.At.Sub(end)
	} else {
		res.Note = "before the late currency was coupled: " + mid.Note
	}
	fmt.Fprintf(r.Out, "   before the late currency: %s\n", stateText(mid))

	// Couple the late currency: its customers are replayed by themselves.
	late := make(chan error, 1)
	if sc.Late != nil {
		go func() { late <- sc.Late(ctx, e) }()
	} else {
		late <- nil
	}
	if err := r.couple(ctx, e, run, lateCurrency); err != nil {
		res.Note = strings.TrimPrefix(res.Note+"; "+err.Error(), "; ")
	}
	if err := <-late; err != nil {
		// No replay to interrupt is the product's failure, which the checks below count.
		res.Warnings = append(res.Warnings, "the fault during the replays was not injected: "+err.Error())
	}
	exp.Waiting = nil
	// The projector may be killed while it replays: its consumer's AckWait (a minute) must fit
	// in the stuck window.
	settle := r.P.Settle
	settle.Stuck = max(min(settle.Stuck, 90*time.Second), 75*time.Second)
	fin := Converge(ctx, e.Obs, exp, settle)
	fmt.Fprintf(r.Out, "   after it: %s\n", stateText(fin))
	if !fin.Final {
		res.Recovered, res.Recovery = false, time.Since(end)
		res.Note = strings.TrimPrefix(res.Note+"; after the late currency was coupled: "+fin.Note, "; ")
	}
	res.Report = Merge(mid.Report, fin.Report)
	return ctx.Err()
}

// waitStarted waits until p is healthy. A process that exits while starting is started again,
// twice at most, as a supervisor would; the report says so.
func (r *Runner) waitStarted(ctx context.Context, e *Env, p *testbed.Proc, res *Result) error {
	for attempt := 1; ; attempt++ {
		err := testbed.WaitHealthy(ctx, p, e.health[p], 60*time.Second)
		if err == nil || p.Running() || attempt == 3 {
			return err
		}
		w := fmt.Sprintf("%s exited while starting (%s); started again", p.Name, lastLine(p.Log))
		fmt.Fprintf(r.Out, "   %s\n", w)
		res.Warnings = append(res.Warnings, w)
		p.ForgetExits()
		if err := p.Restart(); err != nil {
			return err
		}
	}
}

func stateText(o Outcome) string {
	switch {
	case o.Report.OK():
		return "final, every rule holds"
	case o.Final:
		return fmt.Sprintf("final, %d rules break", len(o.Report.Breaks))
	}
	return fmt.Sprintf("not final (%s), %d rules break", o.Note, len(o.Report.Breaks))
}

// couple publishes a currency and waits until it is coupled.
func (r *Runner) couple(ctx context.Context, e *Env, run, code string) error {
	if _, err := publish(ctx, e.PubJS, CurrencyEvent(run, code)); err != nil {
		return err
	}
	err := testbed.WaitFor(ctx, 2*time.Minute, 200*time.Millisecond, func() bool {
		var status string
		err := e.DB.QueryRow(ctx, `SELECT status FROM couplings WHERE table_name = 'currency' AND source_key = $1`, code).Scan(&status)
		return err == nil && status == "synced"
	})
	if err != nil {
		return errors.Join(fmt.Errorf("currency %s was not coupled", code), err)
	}
	return nil
}

// lastLine is the last line of a log file, shortened: why a process exited.
func lastLine(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return printable(lines[len(lines)-1])
}
