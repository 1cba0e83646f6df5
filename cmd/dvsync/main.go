// Command dvsync keeps Microsoft Dataverse in step with change events published to NATS
// JetStream. Run `dvsync help` for its subcommands.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"golang.org/x/sync/errgroup"

	"github.com/dvsync/dvsync/infra/emulator"
	"github.com/dvsync/dvsync/infra/httpapi"
	"github.com/dvsync/dvsync/infra/telemetry"
)

const usage = `dvsync keeps Microsoft Dataverse in step with change events on NATS JetStream.

Usage:
  dvsync dev        one process with everything: embedded NATS, Dataverse emulator, worker,
                    projector and the HTTP endpoint, seeded with a demo
  dvsync worker     sync change events to Dataverse (run any number)
  dvsync projector  store error events in PostgreSQL
  dvsync serve      the errors API (and page) for people and the CLI
  dvsync emulator   run the Dataverse emulator alone
  dvsync classify   read a Dataverse error body on standard input, print how dvsync sorts it
  dvsync probe      ask a process's /readyz (or a URL), exit 0 when it answers 200: a container health check
  dvsync errors     list, show, replay or delete errors through the API (dvsync errors -h)
  dvsync status     each table's synced, failed and skipped records and open errors
  dvsync couple     a coupling run of a table: its records without a row look for it by match
  dvsync couplings  couple, uncouple, sync now, restore or delete the coupling of a record (dvsync couplings -h)
  dvsync doctor     check the setup in Dataverse as a worker does (user, privileges, tables,
                    columns, base currency); exit 1 on gaps
  dvsync pause      pause a table: its changes wait in the stream (dvsync pause <table>)
  dvsync resume     resume a paused table: its waiting changes catch up (dvsync resume <table>)
  dvsync help       this text

Run "dvsync <command> -h" (or "dvsync help <command>") for a command's flags; flags may come
before or after its arguments. README.md lists the environment variables.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP) // SIGHUP: the terminal closed
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// stdin is the classify command's input; tests replace it.
var stdin io.Reader = os.Stdin

func classifyCommand(_ context.Context, args []string, stdout, stderr io.Writer) error {
	return runClassify(stdin, args, stdout, stderr)
}

// run executes one subcommand and returns the exit status: 0 done, 1 failed, 2 usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 1 && args[0] == "help" {
		return run(ctx, append(args[1:], "-h"), stdout, stderr)
	}
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	commands := map[string]func(context.Context, []string, io.Writer, io.Writer) error{
		"dev": runDev, "worker": runWorker, "projector": runProjector, "serve": runServe, "emulator": runEmulator,
		"classify": classifyCommand, "errors": runErrors, "status": runStatus, "probe": runProbe,
		"couple":    runCouple,
		"couplings": runCouplings,
		"doctor":    runDoctor,
		"pause":     runPause, "resume": runResume,
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "dvsync: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err := cmd(ctx, args[1:], stdout, stderr); err != nil {
		var help helpRequested
		if errors.As(err, &help) {
			fmt.Fprint(stdout, help.usage)
			return 0
		}
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "dvsync %s: %v\n", args[0], err)
			return 2
		}
		fmt.Fprintf(stderr, "dvsync %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

// usageError is a configuration mistake: exit status 2.
type usageError struct{ error }

// helpRequested is -h or --help: the command's usage, printed on standard output, exit status 0.
type helpRequested struct{ usage string }

func (helpRequested) Error() string { return flag.ErrHelp.Error() }
func (helpRequested) Unwrap() error { return flag.ErrHelp }

// parse reads a command's flags wherever they stand among its arguments, so that `errors show 2
// --json` reads as `errors show --json 2`; "--" ends the flags. -h or --help returns
// helpRequested; any other mistake is a usageError, told on the flag set's output with the usage.
func parse(fs *flag.FlagSet, args []string) error {
	if fs.Usage == nil {
		fs.Usage = func() {
			fmt.Fprintf(fs.Output(), "Usage: dvsync %s [flags]\n\nFlags:\n", fs.Name())
			fs.PrintDefaults()
		}
	}
	flags, positional := splitArgs(fs, args)
	// The usage is written where it belongs once it is known whether it was asked for.
	out := fs.Output()
	var buf bytes.Buffer
	fs.SetOutput(&buf)
	err := fs.Parse(append(append(flags, "--"), positional...))
	fs.SetOutput(out)
	if errors.Is(err, flag.ErrHelp) {
		return helpRequested{buf.String()}
	}
	_, _ = out.Write(buf.Bytes())
	if err != nil {
		return usageError{err}
	}
	return nil
}

// splitArgs sorts arguments into flags (with the values of those that take one) and the
// positional arguments, in their order. A lone "-" is positional; after "--" everything is.
func splitArgs(fs *flag.FlagSet, args []string) (flags, positional []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return flags, append(positional, args[i+1:]...)
		}
		if len(a) < 2 || a[0] != '-' {
			positional = append(positional, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		if f := fs.Lookup(name); f != nil && !isBoolFlag(f) && i+1 < len(args) {
			i++
			flags = append(flags, args[i])
		}
	}
	return flags, positional
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// newLogger logs JSON at level; an unknown level (refused by validate) logs at info.
func newLogger(w io.Writer, level string) *slog.Logger {
	l, _ := logLevel(level)
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l}))
}

// readConfig reads a subcommand's settings from the environment and its flags, and checks the
// ones it needs; extra binds flags only that subcommand has.
func readConfig(name string, args []string, stderr io.Writer, nats, db, dataverse, worker bool, extra func(*flag.FlagSet, *Config)) (Config, error) {
	cfg := defaultConfig()
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg.flags(fs, nats, db, dataverse, worker)
	if extra != nil {
		extra(fs, &cfg)
	}
	if err := parse(fs, args); err != nil {
		return cfg, err
	}
	if err := cfg.validate(nats, db, dataverse); err != nil {
		return cfg, usageError{err}
	}
	return cfg, nil
}

// startProcess connects a long-running subcommand's stack and opens its HTTP listener; the
// caller closes the stack.
func startProcess(ctx context.Context, cfg Config, log *slog.Logger, withDataverse bool) (*stack, net.Listener, error) {
	s := newStack(cfg, log)
	if err := connectAll(ctx, s, withDataverse); err != nil {
		s.close()
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", cfg.HTTPListen)
	if err != nil {
		s.close()
		return nil, nil, err
	}
	return s, ln, nil
}

func runWorker(ctx context.Context, args []string, _, stderr io.Writer) error {
	cfg, err := readConfig("worker", args, stderr, true, true, true, true, nil)
	if err != nil {
		return err
	}
	s, ln, err := startProcess(ctx, cfg, newLogger(stderr, cfg.LogLevel), true)
	if err != nil {
		return err
	}
	defer s.close()
	s.log.Info("worker started", "nats", s.nc.ConnectedUrlRedacted(), "dataverse", cfg.Dataverse.URL, "http", ln.Addr().String())
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.runWorker(gctx) })
	g.Go(func() error { return s.serveHTTP(gctx, ln, nil) })
	return g.Wait()
}

func runProjector(ctx context.Context, args []string, _, stderr io.Writer) error {
	cfg, err := readConfig("projector", args, stderr, true, true, false, false, nil)
	if err != nil {
		return err
	}
	s, ln, err := startProcess(ctx, cfg, newLogger(stderr, cfg.LogLevel), false)
	if err != nil {
		return err
	}
	defer s.close()
	s.log.Info("projector started", "nats", s.nc.ConnectedUrlRedacted(), "http", ln.Addr().String())
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.runProjector(gctx) })
	g.Go(func() error { return s.serveHTTP(gctx, ln, nil) })
	return g.Wait()
}

// runServe serves the errors API for people, the page and the CLI.
func runServe(ctx context.Context, args []string, _, stderr io.Writer) error {
	cfg, err := readConfig("serve", args, stderr, true, true, false, false, func(fs *flag.FlagSet, c *Config) {
		fs.StringVar(&c.APITokensFile, "tokens-file", c.APITokensFile, "file of API tokens, name:role:token a line (DVSYNC_API_TOKENS_FILE)")
	})
	if err != nil {
		return err
	}
	tokens, err := cfg.loadTokens()
	if err != nil {
		return usageError{err}
	}
	s, ln, err := startProcess(ctx, cfg, newLogger(stderr, cfg.LogLevel), false)
	if err != nil {
		return err
	}
	defer s.close()
	s.log.Info("serving the errors API", "http", ln.Addr().String())
	return s.serveHTTP(ctx, ln, tokens)
}

// connectAll connects NATS and PostgreSQL, and Dataverse when the process writes to it.
func connectAll(ctx context.Context, s *stack, withDataverse bool) error {
	if err := s.connectNATS(ctx); err != nil {
		return err
	}
	if err := s.openStore(ctx); err != nil {
		return err
	}
	if withDataverse {
		return s.connectDataverse(ctx)
	}
	return nil
}

func runEmulator(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("emulator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8090", "address the emulator listens on")
	definitions := fs.String("definitions", "", "a definition file of more tables (see infra/emulator/definitions/dataverse.json)")
	seed := fs.String("seed-file", "", `a seed file of existing rows, {"<table>": [rows]} (see the README)`)
	baseCurrency := fs.String("base-currency", emulator.DefaultBaseCurrency.ISOCode, "the ISO code of the environment's base currency")
	if err := parse(fs, args); err != nil {
		return err
	}
	emu, err := newEmulator(emulatorSetup{definitions: *definitions, seed: *seed, baseCurrency: *baseCurrency})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	base := "http://" + ln.Addr().String()
	fmt.Fprintf(stdout, "Dataverse emulator on %s\n  DATAVERSE_URL=%s\n  DATAVERSE_TOKEN_URL=%s/%s/oauth2/v2.0/token\n  DATAVERSE_CLIENT_ID=%s\n  (client secret: see README)\n",
		base, base, base, emu.Tenant, emulator.DefaultApp.ClientID)
	// Like every dvsync process it answers /healthz, /readyz and /metrics beside the emulated routes.
	mux := http.NewServeMux()
	mux.Handle("/", emu.Handler())
	ops := (&httpapi.Server{Metrics: telemetry.New(nil)}).Handler()
	mux.Handle("GET /healthz", ops)
	mux.Handle("GET /readyz", ops)
	mux.Handle("GET /metrics", ops)
	return serve(ctx, ln, mux)
}

// emulatorSetup is how an emulated environment is provisioned: a user's definition file of more
// tables, a seed file of existing rows, the base currency's ISO code.
type emulatorSetup struct {
	definitions, seed, baseCurrency string
}

// newEmulator returns an emulator with the shipped definitions, a user's definition file and seed
// file when named, and the base currency asked for.
func newEmulator(setup emulatorSetup) (*emulator.Emulator, error) {
	emu := emulator.New()
	if setup.baseCurrency != emulator.DefaultBaseCurrency.ISOCode {
		c := emulator.Currency{ISOCode: setup.baseCurrency, Name: setup.baseCurrency, Symbol: setup.baseCurrency}
		if err := emu.SetBaseCurrency(c); err != nil {
			return nil, usageError{err}
		}
	}
	for _, f := range []struct {
		path string
		load func([]byte) error
	}{{setup.definitions, emu.LoadDefinitions}, {setup.seed, emu.LoadSeed}} {
		if f.path == "" {
			continue
		}
		data, err := os.ReadFile(f.path)
		if err != nil {
			return nil, usageError{err}
		}
		if err := f.load(data); err != nil {
			return nil, usageError{fmt.Errorf("%s: %w", f.path, err)}
		}
	}
	return emu, nil
}
