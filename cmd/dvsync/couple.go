package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/dvsync/dvsync/consumers/replay"
)

// couplingRunner is the API's coupling run: the replayer over the errors ledger.
type couplingRunner struct {
	replayer *replay.Replayer
	ledger   replay.Lister
}

func (c couplingRunner) CoupleTable(ctx context.Context, table, actor string, wait time.Duration) (replay.CouplingRun, error) {
	return c.replayer.CoupleTable(ctx, c.ledger, table, actor, wait)
}

// runCouple is `dvsync couple --table currency`: a coupling run of a table through the API.
func runCouple(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c, asJSON := cliFlags("couple", "couple --table <table> [flags]", stderr)
	table := fs.String("table", "", "the table whose records without a Dataverse row are coupled by match (required)")
	wait := fs.Duration("wait", 20*time.Second, "how long the run waits for the records' outcomes (at most 5m)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *table == "" {
		return usageError{fmt.Errorf("--table is required")}
	}
	c.http.Timeout = *wait + 30*time.Second
	var raw json.RawMessage
	path := "/api/v1/couplings/" + url.PathEscape(*table) + "/match?wait=" + url.QueryEscape(wait.String())
	if _, err := c.call(ctx, http.MethodPost, path, nil, &raw); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, raw)
	}
	var run replay.CouplingRun
	if err := json.Unmarshal(raw, &run); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tOUTCOME\tROW\tDETAIL")
	for _, r := range run.Results {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", termSafe(r.Key), termSafe(r.Outcome), termSafe(r.RowID), termSafe(r.Detail))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %d records: %d coupled, %d created, %d failed, %d still pending, %d not sent\n",
		termSafe(run.Table), run.Records, run.Coupled, run.Created, run.Failed, run.Pending, run.Skipped)
	return nil
}
