package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/emulator"
	"github.com/dvsync/dvsync/infra/events"
	"github.com/dvsync/dvsync/infra/httpapi"
	"github.com/dvsync/dvsync/infra/natsjs"
	"github.com/dvsync/dvsync/infra/sqlite"
)

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := defaultConfig()
	cfg.HTTPListen = "127.0.0.1:8080"
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg.flags(fs, false, false, false, true)
	natsListen := fs.String("nats-listen", "127.0.0.1:4250", "address of the embedded NATS server (unless NATS_URL is set)")
	emulatorListen := fs.String("emulator-listen", "127.0.0.1:8090", "address of the Dataverse emulator (unless DATAVERSE_URL is set)")
	dataDir := fs.String("data-dir", defaultDevDataDir(), "where dvsync dev keeps its state between runs: JetStream's streams, the embedded store, the emulator's rows, the token")
	fresh := fs.Bool("fresh", false, "start over: forget the state kept in --data-dir (and, with DATABASE_URL, drop and recreate that database)")
	definitions := fs.String("emulator-definitions", "", "a definition file of more tables for the emulator")
	emuSeed := fs.String("emulator-seed", "", `a seed file of existing rows for a fresh emulator, {"<table>": [rows]}`)
	baseCurrency := fs.String("emulator-base-currency", emulator.DefaultBaseCurrency.ISOCode, "the ISO code of the emulator's base currency")
	seed := fs.Bool("seed", true, "publish a demo that shows a synced record, a coupling error and a setup error (at the first start of a data directory)")
	if err := parse(fs, args); err != nil {
		return err
	}
	log := newLogger(stderr, cfg.LogLevel)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	// stop ends what runs and returns err: nothing is closed under a running worker.
	stop := func(err error) error {
		cancel()
		_ = g.Wait()
		return err
	}

	// The export line dev prints for the nats CLI names its own publisher: a dev started again in
	// that shell runs its own server, it does not take it for an external NATS.
	if publishesAsDevPublisher(cfg.NATSURL) {
		log.Info("NATS_URL names the publisher dvsync dev prints; starting the embedded NATS server")
		cfg.NATSURL = ""
	}
	if *dataDir == "" {
		return usageError{errors.New("--data-dir: no directory named, and no home directory to keep dev state in")}
	}
	state, err := openDevState(*dataDir, *fresh)
	if err != nil {
		return err
	}
	defer state.close()
	if *fresh && sqlite.IsURL(cfg.DatabaseURL) {
		if err := removeSQLite(sqlite.PathOf(cfg.DatabaseURL)); err != nil {
			return fmt.Errorf("--fresh: %w", err)
		}
	}

	natsShown, natsNote, publisherURL := redactURLs(cfg.NATSURL), "external", ""
	if cfg.NATSURL == "" {
		host, port, err := splitHostPort(*natsListen)
		if err != nil {
			return usageError{fmt.Errorf("--nats-listen: %w", err)}
		}
		// The accounts of a deployment (deployments/nats), so that what works here works there:
		// dvsync's processes sign in as dvsync, and the publisher may only publish changes.
		srv, err := natsjs.StartEmbeddedWithAccounts(host, port, state.natsDir(), state.NATS)
		if err != nil {
			return err
		}
		defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
		cfg.NATSURL = natsjs.UserURL(srv.ClientURL(), natsjs.DvsyncUser, state.NATS.Dvsync)
		natsShown, natsNote = srv.ClientURL(), "embedded; dvsync signs in as "+natsjs.DvsyncUser
		publisherURL = natsjs.UserURL(srv.ClientURL(), natsjs.PublisherUser, state.NATS.Publisher)
	}

	var emu *emulator.Emulator
	var emuURL string
	dvNote := "external"
	if cfg.Dataverse.URL == "" {
		var err error
		setup := emulatorSetup{definitions: *definitions, seed: *emuSeed, baseCurrency: *baseCurrency}
		if _, err := os.Stat(state.emulatorFile()); err == nil && setup.seed != "" {
			// The kept rows are the seed's and what happened since; seeding again would duplicate them.
			log.Info("the emulator's kept rows are used, not the seed file (--fresh seeds again)", "seed", setup.seed)
			setup.seed = ""
		}
		if emu, err = newEmulator(setup); err != nil {
			return err
		}
		if err := emu.LoadFile(state.emulatorFile()); err != nil {
			return fmt.Errorf("%w (--fresh starts over)", err)
		}
		// Its rows are kept beside the couplings that name them: at stop, and now and then in
		// case the process is killed.
		defer func() {
			if err := emu.SaveFile(state.emulatorFile()); err != nil {
				log.Error("the emulator's rows were not kept", "err", err)
			}
		}()
		g.Go(func() error { keepEmulator(gctx, emu, state.emulatorFile(), log); return nil })
		ln, err := net.Listen("tcp", *emulatorListen)
		if err != nil {
			return fmt.Errorf("emulator: %w", err)
		}
		emuURL = "http://" + ln.Addr().String()
		g.Go(func() error { return serve(gctx, ln, emu.Handler()) })
		cfg.Dataverse = DataverseConfig{URL: emuURL, TokenURL: emuURL + "/" + emu.Tenant + "/oauth2/v2.0/token",
			ClientID: emulator.DefaultApp.ClientID, ClientSecret: emulator.DefaultApp.ClientSecret,
			BatchSize: cfg.Dataverse.BatchSize, BatchLinger: cfg.Dataverse.BatchLinger}
		dvNote = "emulator; its rows are kept in " + state.emulatorFile()
	}

	dbNote := "embedded SQLite"
	if cfg.DatabaseURL == "" {
		cfg.DatabaseURL = sqlite.URLScheme + state.storeFile()
	} else if !sqlite.IsURL(cfg.DatabaseURL) {
		dbNote = "PostgreSQL, DATABASE_URL"
		if err := ensureDatabase(ctx, cfg.DatabaseURL, *fresh); err != nil {
			return err
		}
	}
	if err := cfg.validate(true, true, true); err != nil {
		return usageError{err}
	}
	devSourceLinks(&cfg)

	s, ln, err := startProcess(ctx, cfg, log, true)
	if err != nil {
		return err
	}
	defer s.close()
	tokens, err := cfg.loadTokens()
	if err != nil {
		return usageError{err}
	}
	tokens.Add("dev", httpapi.RoleOperator, state.Token)
	g.Go(func() error { return s.runWorker(gctx) })
	g.Go(func() error { return s.runProjector(gctx) })
	g.Go(func() error { return s.serveHTTP(gctx, ln, tokens) })

	web := "http://" + ln.Addr().String()
	fmt.Fprintf(stdout, `dvsync dev is running (Ctrl-C stops it). State: %s (--fresh starts over)

  Errors page  %s/  (sign in with this token)
  Token        %s  (operator)
  NATS         %s  (%s)
  Dataverse    %s  (%s)
  Store        %s  (%s)
  Errors API   %s/api/v1/errors
  Metrics      %s/metrics    Health %s/healthz

For the dvsync CLI (dvsync errors list) and the nats CLI, paste:
  export DVSYNC_SERVER=%s DVSYNC_TOKEN=%s
`, *dataDir, web, state.Token, natsShown, natsNote, cfg.Dataverse.URL, dvNote, redactURL(cfg.DatabaseURL), dbNote, web, web, web, web, state.Token)
	if publisherURL != "" {
		fmt.Fprintf(stdout, `  export NATS_URL=%s
  (the user %s may publish dvsync.changes.> and nothing else)
`, publisherURL, natsjs.PublisherUser)
	}
	if emu == nil || !*seed {
		fmt.Fprintln(stdout)
		return g.Wait()
	}
	when := "at this data directory's first start"
	if !state.Seeded {
		if err := seedDemo(gctx, s, emu); err != nil {
			return stop(fmt.Errorf("seed: %w", err))
		}
		state.Seeded = true
		if err := state.save(); err != nil {
			return stop(err)
		}
		when = "now"
	}
	fmt.Fprintf(stdout, `
Demo (published %s): currency EUR and customer C10000 sync; customer C20000 waits for currency USD
(a coupling error); item 1000 fails because prvCreateProduct was revoked (a setup error).
  Grant it back:  curl -X POST %s/_emulator/privileges -d '{"grant":["prvCreateProduct"]}'
  Publish USD, and C20000 syncs by itself:
  nats pub dvsync.changes.currency -H Nats-Msg-Id:demo-usd-1 '%s'
`, when, emuURL, demoUSD)
	return g.Wait()
}

// keepEmulator saves the emulator's rows soon after they change, until ctx ends: a dev that is
// killed loses at most the last quarter second of them, not rows its store's couplings name.
func keepEmulator(ctx context.Context, emu *emulator.Emulator, path string, log *slog.Logger) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	saved := emu.Changes()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n := emu.Changes(); n != saved {
			if err := emu.SaveFile(path); err != nil {
				log.Warn("the emulator's rows were not kept", "err", err)
				continue
			}
			saved = n
		}
	}
}

// publishesAsDevPublisher reports whether a NATS_URL signs in as the publisher user dev prints.
func publishesAsDevPublisher(raw string) bool {
	first, _, _ := strings.Cut(raw, ",")
	u, err := url.Parse(strings.TrimSpace(first))
	return err == nil && u.User != nil && u.User.Username() == natsjs.PublisherUser
}

// removeSQLite removes an SQLite store and its journal files.
func removeSQLite(path string) error {
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// demoUSD is the change that couples the currency the demo's customer C20000 waits for.
const demoUSD = `{"specversion":"1.0","id":"demo-usd-1","type":"dvsync.record.upserted","source":"demo","data":{"table":"currency","key":"USD","version":1,"fields":{"code":"USD","displayName":"US Dollar"}}}`

// seedDemo publishes a few changes that show each outcome. Dependents are published once their
// dependencies are coupled, so that the demo does not depend on which lane runs first.
func seedDemo(ctx context.Context, s *stack, emu *emulator.Emulator) error {
	if err := emu.SetPrivilege(emulator.DefaultApp.UserID, "prvCreateProduct", false); err != nil {
		return err
	}
	dependencies := []domain.ChangeEvent{
		{Table: "currency", Key: "EUR", Fields: map[string]any{"code": "EUR", "displayName": "Euro", "symbol": "€", "exchangeRate": 1}},
		{Table: "unitOfMeasure", Key: "PCS", Fields: map[string]any{"code": "PCS", "displayName": "Piece"}},
	}
	dependents := []domain.ChangeEvent{
		{Table: "customer", Key: "C10000", Fields: map[string]any{"number": "C10000", "displayName": "Adatum Corporation",
			"currencyCode": "EUR", "city": "Atlanta", "email": "robert.townes@contoso.com"}},
		{Table: "customer", Key: "C20000", Fields: map[string]any{"number": "C20000", "displayName": "Trey Research", "currencyCode": "USD"}},
		{Table: "item", Key: "1000", Fields: map[string]any{"number": "1000", "displayName": "Bicycle", "unitPrice": 4000, "baseUnitOfMeasureCode": "PCS"}},
	}
	if err := publishDemo(ctx, s.js, dependencies); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, ev := range dependencies {
		for {
			c, err := s.store.Coupling(ctx, ev.Table, ev.Key)
			if err != nil {
				return err
			}
			if c.Coupled() {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s was not coupled within 30s; see the log", ev.Ref())
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return publishDemo(ctx, s.js, dependents)
}

func publishDemo(ctx context.Context, js jetstream.JetStream, evs []domain.ChangeEvent) error {
	for _, ev := range evs {
		ev.ID, ev.Type, ev.Source, ev.Version = fmt.Sprintf("dvsync-demo-%s-%s", ev.Table, ev.Key), domain.EventUpserted, "dvsync-dev/demo", 1
		data, err := events.Encode(ev, time.Now())
		if err != nil {
			return err
		}
		msg := &nats.Msg{Subject: events.Subject(ev.Table), Data: data}
		if _, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(ev.ID)); err != nil {
			return fmt.Errorf("publish demo event %s: %w", ev.Ref(), err)
		}
	}
	return nil
}

// devDatabaseMark is the comment on a database dev created: --fresh drops only such a database,
// never one DATABASE_URL happened to name (a staging database exported in the shell, say).
const devDatabaseMark = "created by dvsync dev"

// ensureDatabase creates the database of raw on its server when it does not exist yet, or anew
// when fresh and dev created it. The server must be reachable and the user allowed to create
// databases.
func ensureDatabase(ctx context.Context, raw string, fresh bool) error {
	cfg, err := pgx.ParseConfig(raw)
	if err != nil {
		return usageError{errors.New("DATABASE_URL is not a PostgreSQL connection string")} // pgx's error may quote the password
	}
	name := cfg.Database
	if name == "" {
		return usageError{fmt.Errorf("DATABASE_URL %s names no database", redactURL(raw))}
	}
	cfg.Database = "postgres"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("PostgreSQL at %s (DATABASE_URL) did not answer: %w; unset DATABASE_URL to use the embedded store", redactURL(raw), err)
	}
	defer conn.Close(ctx)
	var exists bool
	var comment *string
	err = conn.QueryRow(ctx, `SELECT true, shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1`, name).Scan(&exists, &comment)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	ident := pgx.Identifier{name}.Sanitize()
	if exists && fresh {
		if comment == nil || *comment != devDatabaseMark {
			return usageError{fmt.Errorf("--fresh: the database %s was not created by dvsync dev; drop it yourself if you mean to", name)}
		}
		if _, err := conn.Exec(ctx, "DROP DATABASE "+ident+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("--fresh: drop the dev database: %w", err)
		}
		exists = false
	}
	if exists {
		return nil
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+ident); err != nil {
		return fmt.Errorf("create the database %s: %w", name, err)
	}
	_, err = conn.Exec(ctx, "COMMENT ON DATABASE "+ident+" IS '"+devDatabaseMark+"'")
	return err
}

// dsnPassword is a password in a key/value connection string (host=… password=…).
var dsnPassword = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// redactURL shows a database or NATS URL without its password; a key/value connection string
// too.
func redactURL(raw string) string {
	if !strings.Contains(raw, "://") {
		return dsnPassword.ReplaceAllString(raw, "${1}xxxxx")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// redactURLs redacts each URL of a comma-separated list, as NATS_URL may be.
func redactURLs(raw string) string {
	if raw == "" {
		return ""
	}
	parts := strings.Split(raw, ",")
	for i, p := range parts {
		parts[i] = redactURL(strings.TrimSpace(p))
	}
	return strings.Join(parts, ",")
}

func splitHostPort(addr string) (string, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	var p int
	if _, err := fmt.Sscanf(port, "%d", &p); err != nil {
		return "", 0, fmt.Errorf("port %q is not a number", port)
	}
	return host, p, nil
}
