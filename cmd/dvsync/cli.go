package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/dvsync/dvsync/consumers/replay"
	"github.com/dvsync/dvsync/infra/httpapi"
)

// apiClient is the CLI's side of the errors API.
type apiClient struct {
	server, token string
	http          *http.Client
}

// cliFlags is the flag set of a CLI command; synopsis is its usage line after "dvsync".
func cliFlags(name, synopsis string, stderr io.Writer) (*flag.FlagSet, *apiClient, *bool) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: dvsync %s\n\nFlags (before or after the arguments):\n", synopsis)
		fs.PrintDefaults()
	}
	c := &apiClient{token: os.Getenv("DVSYNC_TOKEN"), http: &http.Client{Timeout: 60 * time.Second}}
	fs.StringVar(&c.server, "server", env("DVSYNC_SERVER", "http://127.0.0.1:8080"), "the dvsync serve (or dev) address (DVSYNC_SERVER)")
	asJSON := fs.Bool("json", false, "print JSON, for scripts")
	return fs, c, asJSON
}

// apiRefusal is an answer of 400 or more: the CLI exits non-zero with its message.
type apiRefusal struct {
	status int
	msg    string
	body   json.RawMessage
}

func (r *apiRefusal) Error() string { return r.msg }

// refusal reads the message of an error answer: a problem's title and detail, or a replay's
// outcome and detail (a 404 or a 409 of a replay), else the status.
func refusal(resp *http.Response, data []byte) *apiRefusal {
	r := &apiRefusal{status: resp.StatusCode, msg: "the API answered " + termSafe(resp.Status), body: data}
	var p struct {
		Title, Detail string
		ErrorID       int64 `json:"error_id"`
		Outcome       string
	}
	switch {
	case json.Unmarshal(data, &p) != nil:
	case p.Detail != "" && p.Title != "":
		r.msg = termSafe(p.Title) + ": " + termSafe(p.Detail)
	case p.Outcome != "":
		r.msg = replayLine(p.ErrorID, p.Outcome, p.Detail)
	case p.Detail != "":
		r.msg = termSafe(p.Detail)
	}
	return r
}

// call sends one request and decodes the answer into out; an answer of 400 or more is an
// *apiRefusal with the API's message.
func (c *apiClient) call(ctx context.Context, method, path string, body any, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.server, "/")+path, rd)
	if err != nil {
		return 0, usageError{fmt.Errorf("--server: %w", err)}
	}
	if c.token == "" {
		return 0, usageError{errors.New("set DVSYNC_TOKEN to an API token (dvsync dev prints one)")}
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("the API at %s did not answer: %w", c.server, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if resp.StatusCode >= 400 {
		return resp.StatusCode, refusal(resp, data)
	}
	if raw, ok := out.(*json.RawMessage); ok {
		*raw = data
		return resp.StatusCode, nil
	}
	return resp.StatusCode, json.Unmarshal(data, out)
}

func printJSON(w io.Writer, raw json.RawMessage) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		_, err = w.Write(raw)
		return err
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

const errorsUsage = `Usage: dvsync errors <command> [arguments] [flags]

  list                    the errors, newest first (--class, --kind, --table, --q, ...)
  show <id>               one error in full: message, what to do, call stack
  replay <id>...          send the errors' changes again (or --class/--kind/--table)
  delete <id>             delete one error (or --older-than-days N, or --all --yes)

Run "dvsync errors <command> -h" for its flags. DVSYNC_SERVER and DVSYNC_TOKEN say where the
API is and who you are.
`

func runErrors(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{errors.New("errors list|show|replay|delete; see dvsync errors -h")}
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, errorsUsage)
		return nil
	case "list":
		return errorsList(ctx, args[1:], stdout, stderr)
	case "show":
		return errorsShow(ctx, args[1:], stdout, stderr)
	case "replay":
		return errorsReplay(ctx, args[1:], stdout, stderr)
	case "delete":
		return errorsDelete(ctx, args[1:], stdout, stderr)
	}
	return usageError{fmt.Errorf("unknown errors command %q: list, show, replay or delete", args[0])}
}

type cliError struct {
	ID          int64     `json:"id"`
	Class       string    `json:"class"`
	Kind        string    `json:"kind"`
	Table       string    `json:"table"`
	Key         string    `json:"key"`
	Message     string    `json:"message"`
	Resolution  string    `json:"resolution"`
	Status      string    `json:"status"`
	Occurrences int       `json:"occurrences"`
	LastSeen    time.Time `json:"last_seen"`
	CallStack   []struct {
		Name, Detail, Request, Response string
		At                              time.Time
	} `json:"call_stack"`
}

func errorsList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c, asJSON := cliFlags("errors list", "errors list [flags]", stderr)
	filters := map[string]*string{}
	for _, name := range []string{"class", "kind", "status", "table", "key", "q", "since", "until", "limit", "cursor"} {
		filters[name] = fs.String(name, "", "filter: "+name)
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	q := url.Values{}
	for name, v := range filters {
		if *v != "" {
			q.Set(name, *v)
		}
	}
	var raw json.RawMessage
	if _, err := c.call(ctx, http.MethodGet, "/api/v1/errors?"+q.Encode(), nil, &raw); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, raw)
	}
	var page struct {
		Errors []cliError
		Next   string
	}
	if err := json.Unmarshal(raw, &page); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tCLASS\tKIND\tRECORD\tSTATUS\tSEEN\tLAST SEEN\tMESSAGE")
	for _, e := range page.Errors {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s/%s\t%s\t%d\t%s\t%s\n", e.ID, termSafe(e.Class), termSafe(e.Kind), termSafe(e.Table), termSafe(e.Key),
			termSafe(e.Status), e.Occurrences, e.LastSeen.Local().Format("2006-01-02 15:04"), termSafe(shorten(e.Message, 90)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if page.Next != "" {
		fmt.Fprintf(stdout, "more: --cursor %s\n", termSafe(page.Next))
	}
	return nil
}

func shorten(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

// termSafe makes text from the API (which comes from events, hence from anyone who may publish)
// harmless on a terminal: control characters (ESC, CR, BEL, TAB, the C1 controls…), Unicode
// format characters (bidirectional overrides, zero-width) and line separators are written as Go
// escapes, and bytes that are not UTF-8 as \x.., so that no text can move the cursor, rewrite a
// line, or shift a table's columns.
func termSafe(s string) string { return escapeControls(s, false) }

// termSafeLines is termSafe that keeps line feeds, for multi-line text such as a request.
func termSafeLines(s string) string { return escapeControls(s, true) }

func escapeControls(s string, keepNewlines bool) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || unsafeRune(r) && (!keepNewlines || r != '\n') {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case keepNewlines && r == '\n':
			b.WriteRune(r)
		case unsafeRune(r):
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

func unsafeRune(r rune) bool {
	return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || unicode.Is(unicode.Zl, r) || unicode.Is(unicode.Zp, r)
}

func errorsShow(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c, asJSON := cliFlags("errors show", "errors show <id> [flags]", stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{errors.New("errors show needs one error id")}
	}
	var raw json.RawMessage
	if _, err := c.call(ctx, http.MethodGet, "/api/v1/errors/"+url.PathEscape(fs.Arg(0)), nil, &raw); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, raw)
	}
	var e cliError
	if err := json.Unmarshal(raw, &e); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Error %d: %s/%s of %s/%s (%s, seen %d times, last %s)\n\n%s\n\nWhat to do: %s\n\nCall stack:\n",
		e.ID, termSafe(e.Class), termSafe(e.Kind), termSafe(e.Table), termSafe(e.Key), termSafe(e.Status), e.Occurrences,
		e.LastSeen.Local().Format(time.RFC1123), termSafeLines(e.Message), termSafeLines(e.Resolution))
	for i, st := range e.CallStack {
		fmt.Fprintf(stdout, "  %d. %s %s\n", i+1, termSafe(st.Name), termSafe(st.Detail))
		if st.Request != "" {
			fmt.Fprintf(stdout, "     request:  %s\n", strings.ReplaceAll(termSafeLines(st.Request), "\n", "\n               "))
		}
		if st.Response != "" {
			fmt.Fprintf(stdout, "     response: %s\n", strings.ReplaceAll(termSafeLines(st.Response), "\n", "\n               "))
		}
	}
	return nil
}

func errorsReplay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c, asJSON := cliFlags("errors replay", "errors replay <id>... | --class C --kind K --table T [flags]", stderr)
	class := fs.String("class", "", "replay every open error of this class")
	kind := fs.String("kind", "", "... of this kind")
	table := fs.String("table", "", "... of this table")
	if err := parse(fs, args); err != nil {
		return err
	}
	var results []struct {
		ErrorID   int64  `json:"error_id"`
		Outcome   string `json:"outcome"`
		MessageID string `json:"message_id"`
		Detail    string `json:"detail"`
	}
	var raw json.RawMessage
	switch {
	case fs.NArg() > 0:
		var all []json.RawMessage
		for _, id := range fs.Args() {
			if _, err := strconv.ParseInt(id, 10, 64); err != nil {
				return usageError{fmt.Errorf("%q is not an error id", id)}
			}
			var one json.RawMessage
			_, err := c.call(ctx, http.MethodPost, "/api/v1/errors/"+id+"/replay", nil, &one)
			// A replay the API refused (404, 409) is one result among the others, told below.
			var refused *apiRefusal
			var res struct{ Outcome string }
			if errors.As(err, &refused) && json.Unmarshal(refused.body, &res) == nil && res.Outcome != "" {
				one, err = refused.body, nil
			}
			if err != nil {
				return err
			}
			all = append(all, one)
		}
		raw, _ = json.Marshal(map[string]any{"results": all})
	case *class != "" || *kind != "" || *table != "":
		if _, err := c.call(ctx, http.MethodPost, "/api/v1/errors/replay", map[string]string{"class": *class, "kind": *kind, "table": *table}, &raw); err != nil {
			return err
		}
	default:
		return usageError{errors.New("errors replay needs error ids, or --class/--kind/--table")}
	}
	var body struct{ Results json.RawMessage }
	if err := json.Unmarshal(raw, &body); err != nil {
		return err
	}
	if err := json.Unmarshal(body.Results, &results); err != nil {
		return err
	}
	if *asJSON {
		if err := printJSON(stdout, raw); err != nil {
			return err
		}
	}
	// Published and stale (a newer version synced: nothing to send) are done; every other
	// outcome is a refusal or a failure, told on standard error, and the exit status says so.
	var refused []string
	for _, r := range results {
		line := replayLine(r.ErrorID, r.Outcome, r.Detail)
		if r.Outcome == string(replay.Published) || r.Outcome == string(replay.Stale) {
			if !*asJSON {
				fmt.Fprintln(stdout, line)
			}
			continue
		}
		refused = append(refused, line)
	}
	if len(refused) > 0 {
		return fmt.Errorf("%d of %d replays were not done:\n  %s", len(refused), len(results), strings.Join(refused, "\n  "))
	}
	return nil
}

// replayLine tells one replay's outcome.
func replayLine(id int64, outcome, detail string) string {
	line := fmt.Sprintf("error %d: %s", id, termSafe(outcome))
	if detail != "" {
		line += ": " + termSafe(detail)
	}
	return line
}

func errorsDelete(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c, asJSON := cliFlags("errors delete", "errors delete <id> | --older-than-days N | --all --yes [flags]", stderr)
	days := fs.Int("older-than-days", 7, "delete errors last seen more than this many days ago (1 to 36500)")
	all := fs.Bool("all", false, "delete every error")
	yes := fs.Bool("yes", false, "confirm --all")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *days < 1 || *days > 36500 {
		return usageError{fmt.Errorf("--older-than-days %d is not from 1 to 36500", *days)}
	}
	path := "/api/v1/errors?older_than_days=" + strconv.Itoa(*days)
	if fs.NArg() == 1 {
		if _, err := strconv.ParseInt(fs.Arg(0), 10, 64); err != nil {
			return usageError{fmt.Errorf("%q is not an error id", fs.Arg(0))}
		}
		path = "/api/v1/errors/" + fs.Arg(0)
	} else if *all {
		if !*yes {
			return usageError{errors.New("--all deletes every error: add --yes to confirm")}
		}
		path = "/api/v1/errors?all=true"
	}
	var raw json.RawMessage
	if _, err := c.call(ctx, http.MethodDelete, path, nil, &raw); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, raw)
	}
	var out struct{ Deleted int }
	if err := json.Unmarshal(raw, &out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "deleted %d errors\n", out.Deleted)
	return nil
}

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c, asJSON := cliFlags("status", "status [flags]", stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	var raw json.RawMessage
	if _, err := c.call(ctx, http.MethodGet, "/api/v1/status", nil, &raw); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, raw)
	}
	var st struct {
		Tables []struct {
			Table                   string
			Synced, Failed, Skipped int
			OpenErrors              map[string]int `json:"open_errors"`
			LastSyncedAt            *time.Time     `json:"last_synced_at"`
		}
		ConsumerLag *uint64            `json:"consumer_lag"`
		States      []httpapi.TableRun `json:"table_states"`
		Runs        []httpapi.RunView  `json:"coupling_runs"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TABLE\tSYNCED\tFAILED\tSKIPPED\tCOUPLING ERRORS\tSETUP ERRORS\tLAST SYNC")
	for _, t := range st.Tables {
		last := "-"
		if t.LastSyncedAt != nil {
			last = t.LastSyncedAt.Local().Format("2006-01-02 15:04:05")
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%s\n", termSafe(t.Table), t.Synced, t.Failed, t.Skipped, t.OpenErrors["coupling"], t.OpenErrors["setup"], last)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if st.ConsumerLag != nil {
		fmt.Fprintf(stdout, "changes waiting for the workers: %d\n", *st.ConsumerLag)
	}
	if err := printTableStates(stdout, st.States); err != nil {
		return err
	}
	return printCouplingRuns(stdout, st.Runs)
}
