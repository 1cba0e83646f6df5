package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dvsync/dvsync/consumers/syncworker"
	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/httpapi"
	"github.com/dvsync/dvsync/infra/natsjs"
	"github.com/dvsync/dvsync/infra/storage"
)

// tablePauses is the API's pause and resume: the state in the store, the backlog from
// JetStream, a notice to the workers.
type tablePauses struct {
	store    storage.Store
	js       jetstream.JetStream
	nc       *nats.Conn
	mappings domain.Mappings
	// view is the cached reading of JetStream that every status view shares (progress.go).
	view *streamView
}

func (p tablePauses) Pause(ctx context.Context, table, actor string) (bool, error) {
	if _, ok := p.mappings.For(table); !ok {
		return false, httpapi.ErrUnknownTable
	}
	changed, err := p.store.PauseTable(ctx, table, actor)
	p.notify(changed)
	return changed, err
}

func (p tablePauses) Resume(ctx context.Context, table, actor string) (bool, error) {
	if _, ok := p.mappings.For(table); !ok {
		return false, httpapi.ErrUnknownTable
	}
	// The backlog at resume is the catch-up's total; without it the catch-up shows no progress.
	backlog, err := natsjs.TableBacklog(ctx, p.js, table)
	if err != nil {
		return false, err
	}
	pos, err := natsjs.WorkerPosition(ctx, p.js)
	if err != nil {
		return false, err
	}
	// The catch-up is a backlog period, counted from here by the workers like any other.
	changed, err := p.store.ResumeTable(ctx, table, actor, backlog, pos.Delivered)
	p.notify(changed)
	return changed, err
}

// notify tells the workers to read the state now; a lost notice costs only their refresh delay.
func (p tablePauses) notify(changed bool) {
	if changed && p.nc != nil {
		_ = p.nc.Publish(natsjs.PauseSubject, nil)
	}
}

func (p tablePauses) States(ctx context.Context) ([]httpapi.TableRun, error) {
	stored, err := p.store.TableStates(ctx)
	if err != nil {
		return nil, err
	}
	periods, err := p.store.BacklogPeriods(ctx)
	if err != nil {
		return nil, err
	}
	byTable, paused := map[string]storage.TableState{}, map[string]bool{}
	for _, st := range stored {
		byTable[st.Table], paused[st.Table] = st, st.Paused
	}
	open := map[string]storage.BacklogPeriod{}
	for _, pr := range periods {
		open[pr.Table] = pr
	}
	// A status without the waiting counts beats no status: NATS may be away for a moment.
	waiting, werr := p.view.waiting(ctx, paused)
	var out []httpapi.TableRun
	for _, table := range p.mappings.Tables() {
		run := httpapi.TableRun{Table: table, State: httpapi.StateRunning}
		if st, ok := byTable[table]; ok {
			since := st.Since
			run.Since, run.By = &since, st.By
		}
		pr, inPeriod := open[table]
		switch {
		case paused[table]:
			run.State = httpapi.StatePaused
		case inPeriod:
			// A period's counts are the store's, the same in every replica.
			run.State = string(pr.Kind)
			left, progress := pr.Left, periodProgress(pr)
			run.Backlog, run.Progress = &left, &progress
		}
		if n, ok := waiting[table]; ok && werr == nil && run.Backlog == nil {
			run.Backlog = &n
		}
		out = append(out, run)
	}
	return out, nil
}

// runPause is `dvsync pause TABLE`, runResume `dvsync resume TABLE`.
func runPause(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return pauseCommand(ctx, "pause", args, stdout, stderr)
}

func runResume(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return pauseCommand(ctx, "resume", args, stdout, stderr)
}

func pauseCommand(ctx context.Context, verb string, args []string, stdout, stderr io.Writer) error {
	fs, c, asJSON := cliFlags(verb, verb+" <table> [flags]", stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{fmt.Errorf("name one table")}
	}
	table := fs.Arg(0)
	var raw json.RawMessage
	if _, err := c.call(ctx, http.MethodPost, "/api/v1/tables/"+url.PathEscape(table)+"/"+verb, nil, &raw); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, raw)
	}
	var res struct {
		State   string
		Changed bool
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		return err
	}
	switch {
	case !res.Changed:
		fmt.Fprintf(stdout, "%s was %s already\n", termSafe(table), res.State)
	case verb == "pause":
		fmt.Fprintf(stdout, "%s paused: its changes wait in the stream until `dvsync resume %s`\n", termSafe(table), termSafe(table))
	default:
		fmt.Fprintf(stdout, "%s resumed: its waiting changes are being handled (dvsync status shows the catch-up)\n", termSafe(table))
	}
	return nil
}

// printTableStates is the tables' states part of `dvsync status`.
func printTableStates(stdout io.Writer, states []httpapi.TableRun) error {
	if len(states) == 0 {
		return nil
	}
	fmt.Fprintln(stdout)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TABLE\tSTATE\tWAITING\tPROGRESS\tSINCE")
	for _, t := range states {
		waiting, progress, since := "-", "-", "-"
		if t.Backlog != nil {
			waiting = fmt.Sprint(*t.Backlog)
		}
		if t.Progress != nil {
			progress = progressText(*t.Progress)
		}
		if t.Since != nil {
			since = t.Since.Local().Format("2006-01-02 15:04:05")
			if t.By != "" {
				since += " by " + termSafe(t.By)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", termSafe(t.Table), strings.ReplaceAll(t.State, "_", " "), waiting, progress, since)
	}
	return tw.Flush()
}

// progressText is done / total with the rate and the time left, as the page's bar says it.
func progressText(p httpapi.Progress) string {
	if p.Counting() {
		return "counting…"
	}
	out := fmt.Sprintf("%d/%d (%d%%)", p.Done, p.Total, p.Percent())
	if p.Rate > 0 {
		out += fmt.Sprintf(", %.1f/s", p.Rate)
	}
	if p.LeftSeconds != nil {
		out += ", " + (time.Duration(*p.LeftSeconds) * time.Second).Round(time.Second).String() + " left"
	}
	return out
}

// printCouplingRuns is the coupling runs' part of `dvsync status`: each table's newest run.
func printCouplingRuns(stdout io.Writer, runs []httpapi.RunView) error {
	if len(runs) == 0 {
		return nil
	}
	fmt.Fprintln(stdout)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "COUPLING RUN	STATE	PROGRESS	COUPLED	CREATED	FAILED	STARTED")
	for _, r := range runs {
		progress := "-"
		if r.State == "running" || !r.Progress.Counting() {
			progress = progressText(r.Progress)
		}
		state := r.State
		if r.Failure != "" && r.Failure != "interrupted" {
			state += ": " + termSafe(r.Failure)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s by %s\n", termSafe(r.Table), state, progress, r.Coupled, r.Created, r.Failed,
			r.StartedAt.Local().Format("2006-01-02 15:04:05"), termSafe(r.By))
	}
	return tw.Flush()
}

// pausesRefresh is how often a worker reads the paused tables besides the API's notices.
const pausesRefresh = 3 * time.Second

// pauses is the worker's view of the paused tables, read from the store.
func (s *stack) pauses() *syncworker.Pauses {
	return &syncworker.Pauses{Every: pausesRefresh, Log: s.log.With("component", "pauses"),
		Load: func(ctx context.Context) (map[string]bool, map[string]time.Time, error) {
			states, err := s.store.TableStates(ctx)
			if err != nil {
				return nil, nil, err
			}
			paused, resumed := map[string]bool{}, map[string]time.Time{}
			for _, st := range states {
				if st.Paused {
					paused[st.Table] = true
				} else {
					resumed[st.Table] = st.Since
				}
			}
			return paused, resumed, nil
		}}
}
