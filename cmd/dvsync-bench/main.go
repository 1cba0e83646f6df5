// Command dvsync-bench measures dvsync as a user runs it: nats-server, PostgreSQL, `dvsync
// emulator` and `dvsync worker` as separate processes built from this checkout, draining
// backlogs of customer upserts, beside two baselines measured in the same run (raw JetStream
// consume+ack, a naive pipe of one PATCH per message). It prints one table, as text and as
// Markdown; README.md ("Benchmark") says what each scenario measures. Speed is asserted nowhere:
// the table shows each goal and whether this run met it.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/dvsync/dvsync/internal/testbed"
)

// Profile sizes the scenarios.
type Profile struct {
	Name string
	// Backlog is the events the baselines and the zero-latency drain consume.
	Backlog int
	// MemoryBacklog is the backlog whose drain the memory scenario watches.
	MemoryBacklog int
	// Customers is how many distinct customers the backlogs cycle through: event i is version
	// i/Customers+1 of customer i%Customers, so a record's next version comes a whole round later.
	Customers int
	// Sustained is how long each realistic run lasts; more than Dataverse's 5-minute window in
	// full, so that the first window's unspent budget does not flatter the rate.
	Sustained time.Duration
	// LatencyRun is how long the latency scenario publishes.
	LatencyRun time.Duration
}

var profiles = map[string]Profile{
	"full":  {Name: "full", Backlog: 20_000, MemoryBacklog: 100_000, Customers: 20_000, Sustained: 6 * time.Minute, LatencyRun: 2 * time.Minute},
	"quick": {Name: "quick", Backlog: 5_000, MemoryBacklog: 10_000, Customers: 5_000, Sustained: 60 * time.Second, LatencyRun: 30 * time.Second},
}

// coversWindow reports whether a realistic run outlasts Dataverse's service-protection window.
func (p Profile) coversWindow() bool { return p.Sustained > dataverseWindow }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dvsync-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	profile := fs.String("profile", "full", "scenario sizes: full (realistic runs of 6 min) or quick (small backlogs, 60 s realistic runs)")
	repeat := fs.Int("repeat", 3, "runs of each fast scenario (the realistic and latency scenarios run once)")
	keep := fs.Bool("keep", false, "keep logs, NATS stores and databases (a private PostgreSQL cluster is stopped, not dropped)")
	only := fs.String("scenario", "", "run only these scenarios (comma-separated names; -list lists them)")
	list := fs.Bool("list", false, "list the scenarios and exit")
	postgres := fs.String("postgres", "private", `"private": a PostgreSQL cluster of its own (Debian's pg_createcluster, as root); or the URL of a server to create fresh databases on, e.g. postgres://postgres@127.0.0.1:5432/postgres`)
	workers := fs.Int("workers", 1, "dvsync worker processes in the dvsync scenarios")
	lanes := fs.Int("lanes", 0, "DVSYNC_WORKER_LANES for the workers (0: the worker's default)")
	batchSize := fs.Int("batch-size", 100, "DVSYNC_BATCH_SIZE: records per Dataverse request")
	batchLinger := fs.Duration("batch-linger", 20*time.Millisecond, "DVSYNC_BATCH_LINGER: how long a batch waits to fill")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	p, ok := profiles[*profile]
	if !ok {
		fmt.Fprintf(stderr, "dvsync-bench: unknown profile %q (full or quick)\n", *profile)
		return 2
	}
	if *repeat < 1 || *workers < 1 || *lanes < 0 || *batchSize < 1 || *batchLinger < 0 {
		fmt.Fprintln(stderr, "dvsync-bench: -repeat, -workers and -batch-size are at least 1; -lanes and -batch-linger are not negative")
		return 2
	}
	scenarios := Scenarios()
	if *list {
		for _, s := range scenarios {
			fmt.Fprintf(stdout, "%-12s %s\n", s.Name, s.About)
		}
		return 0
	}
	if *only != "" {
		var err error
		if scenarios, err = testbed.Pick(scenarios, *only, func(s Scenario) string { return s.Name }); err != nil {
			fmt.Fprintf(stderr, "dvsync-bench: %v\n", err)
			return 2
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second Ctrl-C ends the run at once (children die with it: Pdeathsig)
	}()

	r := &Runner{P: p, Repeat: *repeat, Keep: *keep, Out: stdout, Postgres: *postgres,
		Knobs: Knobs{Workers: *workers, Lanes: *lanes, BatchSize: *batchSize, BatchLinger: *batchLinger}}
	start := time.Now()
	results, err := r.Run(ctx, scenarios)
	if err != nil {
		fmt.Fprintf(stderr, "dvsync-bench: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "\nprofile %s, %s, in %s\n\n", p.Name, r.Knobs, time.Since(start).Round(time.Second))
	t := BuildTable(p, results)
	t.WriteText(stdout)
	fmt.Fprintln(stdout, "\nMarkdown:")
	fmt.Fprintln(stdout)
	t.WriteMarkdown(stdout)
	if r.Keep {
		fmt.Fprintf(stdout, "\nlogs: %s\n", r.tmp)
	} else if r.tmp != "" {
		_ = os.RemoveAll(r.tmp)
	}
	if ctx.Err() != nil {
		return 130
	}
	if slices.ContainsFunc(results, func(res *Result) bool { return res.Failed() }) {
		return 1
	}
	return 0
}
