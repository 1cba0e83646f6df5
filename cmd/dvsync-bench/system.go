package main

// The system one run measures, from a clean state: a new nats-server and store, a fresh database,
// the emulator reset to the run's model, and dvsync workers configured by the environment.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dvsync/dvsync/infra/emulator"
	"github.com/dvsync/dvsync/infra/natsjs"
	"github.com/dvsync/dvsync/internal/testbed"
)

// Knobs are the worker settings a run passes through the environment (a worker that does not
// read one yet ignores it).
type Knobs struct {
	Workers     int
	Lanes       int // 0: the worker's default
	BatchSize   int
	BatchLinger time.Duration
}

func (k Knobs) String() string {
	lanes := "default lanes"
	if k.Lanes > 0 {
		lanes = fmt.Sprintf("%d lanes", k.Lanes)
	}
	return fmt.Sprintf("%d worker process(es), %s, batches of %d, linger %s", k.Workers, lanes, k.BatchSize, k.BatchLinger)
}

// Model is what the emulator stands for in a run.
type Model struct {
	// Realistic: Dataverse's default service-protection limits and its latency (20 ms a request,
	// 5 ms a record). Otherwise no latency and limits far above any load, so that only dvsync's
	// own cost shows.
	Realistic bool
	// Users is how many application users the workers sign in as.
	Users int
}

// The realistic model's numbers: Dataverse's round trips as the issue models them, and its
// default execution-time limit of 20 minutes per 5-minute window, per user.
const (
	realisticPerRequest = 20 * time.Millisecond
	realisticPerRecord  = 5 * time.Millisecond
	dataverseWindow     = 5 * time.Minute
)

// ceilingPerUser is the execution time one user may spend per second of wall time (4 s).
var ceilingPerUser = float64(emulator.DefaultLimits.ExecutionTime) / float64(emulator.DefaultLimits.Window)

// App is an application user the workers sign in as.
type App struct {
	ClientID     string `json:"clientId"`
	ClientSecret string `json:"clientSecret"`
}

// Databases is the PostgreSQL server runs create their databases on.
type Databases struct {
	admin string // URL of a database to connect to for CREATE DATABASE
}

// URL is the URL of database name on the same server.
func (d Databases) URL(name string) string {
	u, err := url.Parse(d.admin)
	if err != nil {
		return d.admin
	}
	u.Path = "/" + name
	return u.String()
}

// System is one run's processes and the bench's connections to them.
type System struct {
	r       *Runner
	name    string
	model   Model
	dir     string
	sup     *testbed.Supervisor
	nodes   []*testbed.NATSNode
	auth    testbed.NATSAuth
	js      jetstream.JetStream // as dvsync's user: consumers, baselines
	pubJS   jetstream.JetStream // as a publisher: the load
	closers []func()
	db      string
	apps    []App
	started int // workers started so far, for their names
	// lastMetrics is the workers' last scrape of a measured span.
	lastMetrics Samples

	mu      sync.Mutex // the workers are read while they start
	workers []*Worker
}

func (s *System) running() []*Worker {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.workers)
}

// Worker is one dvsync worker process.
type Worker struct {
	Proc    *testbed.Proc
	Metrics string // its /metrics URL
	Health  string
}

// up starts a clean system for one run of a scenario.
func (r *Runner) up(ctx context.Context, name string, m Model) (*System, error) {
	r.runs++
	s := &System{r: r, name: fmt.Sprintf("%02d-%s", r.runs, name), model: m, sup: &testbed.Supervisor{},
		auth: testbed.NATSAuth{Users: natsjs.NewPasswords(), Route: randomHex(16)}}
	s.dir = filepath.Join(r.tmp, "runs", s.name)
	var err error
	if s.nodes, err = testbed.StartNATS(ctx, s.sup, r.bins.NATSServer, filepath.Join(s.dir, "nats"), s.dir, 1, s.auth); err != nil {
		return s, err
	}
	s.db = "bench_" + strings.ReplaceAll(s.name, "-", "_")
	if err := testbed.CreateDB(ctx, r.db.admin, s.db); err != nil {
		return s, fmt.Errorf("create database %s: %w", s.db, err)
	}
	if err := r.emu.Admin(ctx, http.MethodPost, "/_emulator/reset", nil); err != nil {
		return s, err
	}
	limits, latency := testbed.GenerousLimits, map[string]string{"perRequest": "0s", "perRecord": "0s"}
	if m.Realistic {
		l := emulator.DefaultLimits
		limits = map[string]any{"window": l.Window.String(), "requests": l.Requests, "executionTime": l.ExecutionTime.String(),
			"concurrent": l.Concurrent, "dopHint": l.DOPHint}
		latency = map[string]string{"perRequest": realisticPerRequest.String(), "perRecord": realisticPerRecord.String()}
	}
	if err := r.emu.Admin(ctx, http.MethodPost, "/_emulator/limits", limits); err != nil {
		return s, err
	}
	if err := r.emu.Admin(ctx, http.MethodPost, "/_emulator/latency", latency); err != nil {
		return s, err
	}
	s.apps = []App{{ClientID: emulator.DefaultApp.ClientID, ClientSecret: emulator.DefaultApp.ClientSecret}}
	for len(s.apps) < max(m.Users, 1) {
		a := App{ClientID: uuid.NewString(), ClientSecret: randomHex(16)}
		if err := r.emu.Admin(ctx, http.MethodPost, "/_emulator/apps", a); err != nil {
			if se := (*testbed.StatusError)(nil); errors.As(err, &se) && se.Status == http.StatusNotFound {
				return s, errNoApps
			}
			return s, err
		}
		s.apps = append(s.apps, a)
	}
	connect := func(label, user, password string) (jetstream.JetStream, error) {
		nc, err := nats.Connect(testbed.NATSURLs(s.nodes, user, password), nats.Name(label), nats.MaxReconnects(-1))
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, nc.Close)
		return jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(publishWindow))
	}
	if s.js, err = connect("dvsync-bench", natsjs.DvsyncUser, s.auth.Users.Dvsync); err != nil {
		return s, err
	}
	if s.pubJS, err = connect("dvsync-bench-publisher", natsjs.PublisherUser, s.auth.Users.Publisher); err != nil {
		return s, err
	}
	// The streams exist before the backlog is published, as dvsync creates them.
	return s, natsjs.Ensure(ctx, s.js, natsjs.DefaultTopology())
}

// errNoApps: the emulator cannot register a second application user (it has no
// /_emulator/apps yet), so a scenario with several users cannot run.
var errNoApps = errors.New("the emulator has no POST /_emulator/apps for a second application user")

// down stops everything of the run and, unless the runner keeps them, drops its database and store.
func (s *System) down(ctx context.Context) {
	for _, c := range slices.Backward(s.closers) {
		c()
	}
	s.stopWorkers() // before NATS, as an operator would
	s.sup.StopAll(20 * time.Second)
	if !s.r.Keep {
		if s.db != "" {
			_ = testbed.DropDB(ctx, s.r.db.admin, s.db)
		}
		_ = os.RemoveAll(s.dir)
	}
}

// startWorkers starts the run's worker processes, configured as in production, and waits until
// each is healthy.
func (s *System) startWorkers(ctx context.Context) error {
	k := s.r.Knobs
	extra := []string{
		"DVSYNC_RETRY_BUDGET=1h", // no change parked for a transient cause within a run
		fmt.Sprintf("DVSYNC_BATCH_SIZE=%d", k.BatchSize),
		"DVSYNC_BATCH_LINGER=" + k.BatchLinger.String(),
		"DVSYNC_LOG_LEVEL=warn",
	}
	if k.Lanes > 0 {
		extra = append(extra, fmt.Sprintf("DVSYNC_WORKER_LANES=%d", k.Lanes))
	}
	if len(s.apps) > 1 {
		// The first app is DATAVERSE_CLIENT_ID's (testbed.DvsyncEnv): the list names the others.
		clients, err := json.Marshal(s.apps[1:])
		if err != nil {
			return err
		}
		extra = append(extra, "DATAVERSE_CLIENTS="+string(clients))
	}
	natsURL := testbed.NATSURLs(s.nodes, natsjs.DvsyncUser, s.auth.Users.Dvsync)
	for range k.Workers {
		port, err := testbed.FreePort()
		if err != nil {
			return err
		}
		s.started++
		name := fmt.Sprintf("worker-%d", s.started)
		env := testbed.DvsyncEnv(natsURL, s.r.db.URL(s.db), s.r.emu, port, extra...)
		p, err := s.sup.Start(name, filepath.Join(s.dir, name+".log"), env, s.r.bins.Dvsync, "worker")
		if err != nil {
			return err
		}
		base := fmt.Sprintf("http://127.0.0.1:%d", port)
		s.mu.Lock()
		s.workers = append(s.workers, &Worker{Proc: p, Metrics: base + "/metrics", Health: base + "/healthz"})
		s.mu.Unlock()
	}
	for _, w := range s.running() {
		if err := testbed.WaitHealthy(ctx, w.Proc, w.Health, 60*time.Second); err != nil {
			return err
		}
	}
	return nil
}

// stopWorkers stops the workers as an operator does (SIGTERM), and forgets them.
func (s *System) stopWorkers() {
	for _, w := range s.running() {
		w.Proc.Stop(20 * time.Second)
	}
	s.mu.Lock()
	s.workers = nil
	s.mu.Unlock()
}

// warmUp couples the currency the customers use with a first set of workers, then stops them, so
// that the measured workers start on a backlog whose dependency is coupled.
func (s *System) warmUp(ctx context.Context) error {
	if err := s.startWorkers(ctx); err != nil {
		return err
	}
	if err := s.couple(ctx, currency); err != nil {
		return err
	}
	s.stopWorkers()
	return nil
}

// couple publishes a currency and waits until it is coupled.
func (s *System) couple(ctx context.Context, code string) error {
	c := CurrencyChange(s.name, code)
	if _, err := testbed.Publish(ctx, s.pubJS, c.Subject, c.MsgID, c.Data, nil); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, s.r.db.URL(s.db))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	err = testbed.WaitFor(ctx, 2*time.Minute, 100*time.Millisecond, func() bool {
		var status string
		err := conn.QueryRow(ctx, `SELECT status FROM couplings WHERE table_name = 'currency' AND source_key = $1`, code).Scan(&status)
		return err == nil && status == "synced"
	})
	if err != nil {
		return errors.Join(fmt.Errorf("currency %s was not coupled", code), err)
	}
	return nil
}

// backlog publishes the profile's backlog and creates a durable pull consumer on it configured
// as the workers' is, for a baseline.
func (s *System) backlog(ctx context.Context, durable string) (jetstream.Consumer, error) {
	if err := publishBacklog(ctx, s.pubJS, s.name, 0, s.r.P.Backlog, s.r.P.Customers); err != nil {
		return nil, err
	}
	cfg := natsjs.DefaultTopology().WorkerConsumerConfig()
	cfg.Durable, cfg.Description = durable, "dvsync-bench baseline"
	return s.js.CreateOrUpdateConsumer(ctx, natsjs.ChangesStream, cfg)
}

// workerConsumer is the workers' durable consumer.
func (s *System) workerConsumer(ctx context.Context) (jetstream.Consumer, error) {
	return s.js.Consumer(ctx, natsjs.ChangesStream, natsjs.WorkerConsumer)
}

// peakRSS is the largest peak resident set (VmHWM) of the running workers, in bytes.
func (s *System) peakRSS() (int64, error) {
	var peak int64
	for _, w := range s.running() {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", w.Proc.Pid()))
		if err != nil {
			return 0, err
		}
		hwm, err := vmHWM(data)
		if err != nil {
			return 0, err
		}
		peak = max(peak, hwm)
	}
	return peak, nil
}

// metrics scrapes every worker's /metrics and adds the samples up.
func (s *System) metrics(ctx context.Context) (Samples, error) {
	var all Samples
	for _, w := range s.running() {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.Metrics, nil)
		if err != nil {
			return nil, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, fmt.Errorf("%s metrics: %w", w.Proc.Name, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		samples, err := ParseMetrics(body)
		if err != nil {
			return nil, fmt.Errorf("%s metrics: %w", w.Proc.Name, err)
		}
		all = append(all, samples...)
	}
	return all, nil
}

// Usage is what the emulator served the run's application users, added up.
type Usage struct {
	Known     bool // the emulator reports it (h-emu's GET /_emulator/stats)
	Requests  int64
	Records   int64
	Exec      time.Duration
	Throttled int64
	PerUser   map[string]int64 // records served per client id
}

// usage reads the emulator's per-user counters; Known is false when it has none.
func (s *System) usage(ctx context.Context) (Usage, error) {
	var stats struct {
		Users map[string]struct {
			Requests        int64            `json:"requests"`
			Records         int64            `json:"records"`
			ExecutionTimeMs float64          `json:"executionTimeMs"`
			Throttled       map[string]int64 `json:"throttled"`
		} `json:"users"`
	}
	if err := s.r.emu.Read(ctx, "/_emulator/stats", &stats); err != nil {
		return Usage{}, err
	}
	u := Usage{Known: stats.Users != nil, PerUser: map[string]int64{}}
	for id, us := range stats.Users {
		u.Requests += us.Requests
		u.Records += us.Records
		u.Exec += time.Duration(us.ExecutionTimeMs * float64(time.Millisecond))
		for _, n := range us.Throttled {
			u.Throttled += n
		}
		u.PerUser[id] = us.Records
	}
	return u, nil
}

// since is what was served between an earlier reading and this one.
func (u Usage) since(earlier Usage) Usage {
	d := Usage{Known: u.Known && earlier.Known, Requests: u.Requests - earlier.Requests, Records: u.Records - earlier.Records,
		Exec: u.Exec - earlier.Exec, Throttled: u.Throttled - earlier.Throttled, PerUser: map[string]int64{}}
	for id, n := range u.PerUser {
		d.PerUser[id] = n - earlier.PerUser[id]
	}
	return d
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
