package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/dvsync/dvsync/consumers/projector"
	"github.com/dvsync/dvsync/consumers/replay"
	"github.com/dvsync/dvsync/consumers/syncworker"
	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/dataverse"
	"github.com/dvsync/dvsync/infra/mappingfile"
	"github.com/dvsync/dvsync/infra/natsjs"
	"github.com/dvsync/dvsync/infra/postgres"
	"github.com/dvsync/dvsync/infra/redact"
	"github.com/dvsync/dvsync/infra/sqlite"
	"github.com/dvsync/dvsync/infra/storage"
	"github.com/dvsync/dvsync/infra/telemetry"
)

// stack is the connected parts a process runs on. Every subcommand and the end-to-end tests
// build it the same way; each part is nil when the subcommand does not need it.
type stack struct {
	pausesView atomic.Pointer[syncworker.Pauses] // the worker's, for tests
	cfg        Config
	log        *slog.Logger
	metrics    *telemetry.Metrics
	nc         *nats.Conn
	ncClosed   chan struct{} // closed by NATS after its last callback
	js         jetstream.JetStream
	store      storage.Store
	storeKind  string           // "postgres" or "sqlite": what /healthz names the store check
	dv         domain.Dataverse // batched over dvUsers
	dvUsers    []dataverse.User
	// stopDataverse ends the batched port's batchers, once the worker no longer calls it.
	stopDataverse func()
	mappings      domain.Mappings

	watchMu sync.Mutex
	watched map[string]bool // the scrape-time metrics registered, by what they watch

	// startChecked is closed once the worker's setup check at start is done and it consumes.
	startChecked chan struct{}
}

func newStack(cfg Config, log *slog.Logger) *stack {
	cfg.Worker.AckWait, cfg.Worker.MaxDeliver = cfg.Topology.AckWait, cfg.Topology.MaxDeliver
	return &stack{cfg: cfg, log: log, metrics: telemetry.New(domain.KnownTables), startChecked: make(chan struct{})}
}

// dialNATS opens a connection that reconnects for ever and logs its disconnections and its
// asynchronous errors. NATS_URL carries the credentials (nats://dvsync:<password>@host:4222);
// nothing here logs it, only ConnectedUrlRedacted.
func (s *stack) dialNATS(name string, opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{nats.Name(name), nats.MaxReconnects(-1),
		// A publish or subscribe the server's permissions refuse is reported only here.
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			s.log.Error("NATS error", "connection", name, "err", err)
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: we closed it
				s.log.Warn("NATS disconnected", "connection", name, "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			s.log.Info("NATS reconnected", "connection", name, "url", c.ConnectedUrlRedacted())
		})}, opts...)
	nc, err := nats.Connect(s.cfg.NATSURL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS: %w", err)
	}
	return nc, nil
}

// jetStreamReadyWait is how long a starting process waits for JetStream to answer: a NATS cluster
// started at the same time elects its leaders within seconds.
const jetStreamReadyWait = 2 * time.Minute

func (s *stack) connectNATS(ctx context.Context) error {
	closed := make(chan struct{})
	nc, err := s.dialNATS("dvsync", nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return err
	}
	if err := natsjs.EnsureWhenReady(ctx, js, s.cfg.Topology, jetStreamReadyWait, s.log.With("component", "nats")); err != nil {
		nc.Close()
		return err
	}
	s.nc, s.ncClosed, s.js = nc, closed, js
	return nil
}

// storeConnections sizes the database pool: the lanes' coupling reads, claims and writes go out
// as a few batched statements at a time (postgres.batchConfig), whatever the number of lanes;
// the rest serve the projector, the API and health checks.
const storeConnections = 16

// openStore opens the database DATABASE_URL names: PostgreSQL (postgres://…), or the embedded
// SQLite file of `dvsync dev` (sqlite:<path>).
func (s *stack) openStore(ctx context.Context) error {
	var st storage.Store
	var err error
	kind := "postgres"
	if sqlite.IsURL(s.cfg.DatabaseURL) {
		kind = "sqlite"
		st, err = sqlite.Open(ctx, sqlite.PathOf(s.cfg.DatabaseURL))
	} else {
		st, err = postgres.Open(ctx, s.cfg.DatabaseURL, storeConnections)
	}
	if err != nil {
		return err
	}
	s.store, s.storeKind = st, kind
	return nil
}

func (s *stack) connectDataverse(ctx context.Context) error {
	ms := domain.DefaultMappings()
	if s.cfg.MappingsFile != "" {
		var err error
		if ms, err = mappingfile.Load(s.cfg.MappingsFile); err != nil {
			return err
		}
	}
	if err := ms.Validate(); err != nil {
		return fmt.Errorf("mappings: %w", err)
	}
	d := s.cfg.Dataverse
	if d.RequestTimeout <= 0 {
		d.RequestTimeout = 30 * time.Second
	}
	apps := d.Users()
	perUser := d.MaxParallel
	if perUser <= 0 {
		perUser = 52
	}
	// One transport for every user: they reach one host, each with up to perUser requests at once.
	httpClient := &http.Client{Timeout: d.RequestTimeout, Transport: dataverse.NewTransport(len(apps) * perUser)}
	var users []dataverse.User
	var shares []*natsjs.Throttle
	for _, app := range apps {
		name := app.ClientID // the metrics' user label: the client id, never the secret
		creds := dataverse.ClientCredentials{TokenURL: d.TokenURL, TenantID: d.TenantID, ClientID: app.ClientID, ClientSecret: app.ClientSecret,
			Timeout:   d.RequestTimeout,
			OnFailure: func(reason string) { s.metrics.TokenFailures.WithLabelValues(name, reason).Inc() }}
		// The token source outlives this call: it refreshes tokens for the process's whole life.
		ts := creds.TokenSource(context.WithoutCancel(ctx), d.URL)
		var notify func(time.Time)
		client, err := dataverse.NewClient(d.URL, dataverse.WithTokenSource(ts), dataverse.WithHTTPClient(httpClient),
			dataverse.WithRequestObserver(func(method, entitySet string, status int, took time.Duration) {
				s.metrics.ObserveDataverse(method, entitySet, status, took)
				s.metrics.ObserveDataverseUser(name, status)
			}),
			dataverse.WithThrottleObserver(func(code string) { s.metrics.UserThrottled.WithLabelValues(name, code).Inc() }),
			dataverse.WithMaxParallel(d.MaxParallel),
			dataverse.WithDuplicateDetection(d.DuplicateDetection), dataverse.WithBypassCustomPlugins(d.BypassCustomPlugins),
			dataverse.WithThrottleListener(func(until time.Time) {
				if notify != nil {
					notify(until)
				}
			}))
		if err != nil {
			return err
		}
		if s.nc != nil {
			// Dataverse throttles per user: every worker of this app registration waits together.
			share, err := natsjs.ShareThrottle(s.nc, app.ClientID, client.HoldUntil, s.log.With("component", "throttle"))
			if err != nil {
				return err
			}
			notify = share.Notify
			shares = append(shares, share)
		}
		s.metrics.WatchDataverseUser(name, client.InFlight, dataverse.TokenRefused, dataverse.TokenUnavailable)
		users = append(users, dataverse.User{Name: name, Client: client})
	}
	if len(shares) > 0 {
		s.metrics.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "dvsync_throttle_notices_ignored_total",
			Help: "Throttle notices from other processes that were malformed or held workers too long, and were ignored."},
			func() float64 {
				n := 0.0
				for _, share := range shares {
					n += float64(share.Ignored())
				}
				return n
			}))
	}
	dv, err := dataverse.NewBatched(users, dataverse.BatchConfig{Size: d.BatchSize, Linger: d.BatchLinger,
		OnBatch: func(_, _ string, calls int) { s.metrics.BatchCalls.Observe(float64(calls)) }})
	if err != nil {
		return err
	}
	s.metrics.WatchBatchSize(dv.BatchSize)
	s.dv, s.dvUsers, s.stopDataverse, s.mappings = dv, users, dv.Close, ms
	return nil
}

// close drains NATS and waits until its last callback ran, so that nothing runs after the
// process says it stopped.
func (s *stack) close() {
	if s.stopDataverse != nil {
		s.stopDataverse()
	}
	if s.nc != nil {
		if err := s.nc.Drain(); err != nil {
			s.nc.Close()
		}
		select {
		case <-s.ncClosed:
		case <-time.After(30 * time.Second):
			s.log.Warn("NATS did not close within 30s")
		}
	}
	if s.store != nil {
		s.store.Close()
	}
}

// How the metrics read at scrape time are read: JetStream's consumer state every few seconds, the
// ledger's counts (two grouped queries) at most every 15s, each within a bound, so that a scrape
// returns at once whatever NATS or PostgreSQL does.
var (
	consumerRefresh = telemetry.Refresh{Every: 5 * time.Second, Timeout: 2 * time.Second}
	ledgerRefresh   = telemetry.Refresh{Every: 15 * time.Second, Timeout: 3 * time.Second}
)

// watchOnce registers a scrape-time metric once per process: `dvsync dev` runs the worker, the
// projector and the API on one registry.
func (s *stack) watchOnce(what string, register func()) {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	if s.watched[what] {
		return
	}
	if s.watched == nil {
		s.watched = map[string]bool{}
	}
	s.watched[what] = true
	register()
}

// watchConsumer exports a durable consumer's backlog (dvsync_nats_consumer_*).
func (s *stack) watchConsumer(stream, consumer string) {
	s.watchOnce("consumer "+stream+" "+consumer, func() {
		r := consumerRefresh
		r.OnError = func(err error) {
			s.log.Warn("reading the consumer's state for the metrics", "consumer", consumer, "err", redact.Text(err.Error()))
		}
		s.metrics.WatchConsumer(stream, consumer, r, (&natsjs.Backlog{JS: s.js, Stream: stream, Consumer: consumer}).Read)
	})
}

// watchLedger exports the ledger's open errors and skipped records (dvsync_open_errors and co.),
// from the processes that own the ledger: the projector and serve.
func (s *stack) watchLedger() {
	s.watchOnce("ledger", func() {
		r := ledgerRefresh
		r.OnError = func(err error) {
			s.log.Warn("counting the errors ledger for the metrics", "err", redact.Text(err.Error()))
		}
		s.metrics.WatchLedger(s.store, r)
	})
}

func (s *stack) runWorker(ctx context.Context) error {
	s.watchConsumer(natsjs.ChangesStream, natsjs.WorkerConsumer)
	consumer, err := s.js.Consumer(ctx, natsjs.ChangesStream, natsjs.WorkerConsumer)
	if err != nil {
		return fmt.Errorf("worker consumer: %w", err)
	}
	w := &syncworker.Worker{
		Consumer: consumer,
		Syncer: &domain.Syncer{Mappings: s.mappings, Store: s.store, Dataverse: s.dv, Now: time.Now, Skip: s.cfg.Skip,
			Classifier: domain.Classifier{IntegrationUser: s.integrationUser()}, LocalCurrency: s.cfg.LocalCurrency},
		Outcomes: natsjs.Publisher{JS: s.js},
		Config:   s.cfg.Worker,
		Metrics:  s.metrics,
		Log:      s.log.With("component", "worker"),
		Pauses:   s.pauses(),
	}
	w.Progress = s.progress(w.Pauses)
	s.pausesView.Store(w.Pauses)
	if s.nc != nil {
		// A notice from the API: read the paused tables now rather than at the next refresh.
		sub, err := s.nc.Subscribe(natsjs.PauseSubject, func(*nats.Msg) { w.Pauses.Refresh() })
		if err != nil {
			return fmt.Errorf("worker: pause notices: %w", err)
		}
		defer sub.Unsubscribe() //nolint:errcheck // the connection closes after
	}
	// The setup is checked before the first record is consumed, so that a gap is reported before
	// a record fails of it; the worker runs whatever the check finds, and past the start timeout
	// without it.
	ck := s.preflightChecker()
	ck.Start(ctx)
	close(s.startChecked)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return ck.Run(gctx) })
	g.Go(func() error { return w.Run(gctx) })
	if err := g.Wait(); err != nil && !(errors.Is(err, context.Canceled) && ctx.Err() != nil) {
		return err
	}
	return nil // stopped, maybe before it consumed anything (a check at start still waiting)
}

func (s *stack) runProjector(ctx context.Context) error {
	s.watchConsumer(natsjs.ErrorsStream, natsjs.ProjectorConsumer)
	s.watchLedger()
	// The projector drains its own connection on shutdown (see projector.Run), which must not
	// close the connection the worker and the API share.
	nc, err := s.dialNATS("dvsync-projector")
	if err != nil {
		return err
	}
	// The projector reads the change an error names back from the changes stream: only those
	// bytes are replayed.
	changes, err := s.js.Stream(ctx, natsjs.ChangesStream)
	if err != nil {
		nc.Close()
		return fmt.Errorf("projector: the changes stream: %w", err)
	}
	p := &projector.Projector{Ledger: s.store, Changes: changes, Metrics: s.metrics, Log: s.log.With("component", "projector")}
	if s.cfg.ReplayDependents {
		p.Dependents = &replay.Replayer{Store: s.store, JS: s.js, Log: s.log.With("component", "replay"), Metrics: s.metrics}
	}
	return projector.Run(ctx, nc, p)
}

// integrationUser names the application user in resolutions: as configured, or by its apps.
func (s *stack) integrationUser() string {
	if u := s.cfg.Dataverse.IntegrationUser; u != "" {
		return u
	}
	var ids []string
	for _, app := range s.cfg.Dataverse.Users() {
		ids = append(ids, app.ClientID)
	}
	return "of the app " + strings.Join(ids, " or ")
}
