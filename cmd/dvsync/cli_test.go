package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/storage"
)

func TestSplitArgsPutsFlagsBeforeArguments(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.String("class", "", "")
	fs.Bool("json", false, "")
	for _, c := range []struct{ in, flags, positional []string }{
		{[]string{"2", "--json"}, []string{"--json"}, []string{"2"}},
		{[]string{"--class", "setup", "a", "b"}, []string{"--class", "setup"}, []string{"a", "b"}},
		{[]string{"a", "--class", "setup", "b", "--json=false"}, []string{"--class", "setup", "--json=false"}, []string{"a", "b"}},
		// A bool flag takes no value; "-" is an argument; after "--" everything is one.
		{[]string{"--json", "3", "-", "--", "--class", "x"}, []string{"--json"}, []string{"3", "-", "--class", "x"}},
		// A value that looks like a flag is still the value of the flag before it.
		{[]string{"--class", "--json"}, []string{"--class", "--json"}, nil},
		{[]string{"--unknown", "v"}, []string{"--unknown"}, []string{"v"}},
	} {
		flags, positional := splitArgs(fs, c.in)
		if !reflect.DeepEqual(flags, c.flags) || !reflect.DeepEqual(positional, c.positional) {
			t.Errorf("splitArgs(%q) = %q, %q; want %q, %q", c.in, flags, positional, c.flags, c.positional)
		}
	}
	var out bytes.Buffer
	fs.SetOutput(&out)
	if err := parse(fs, []string{"7", "--class", "setup", "--json"}); err != nil || fs.Arg(0) != "7" || fs.NArg() != 1 ||
		fs.Lookup("class").Value.String() != "setup" || fs.Lookup("json").Value.String() != "true" {
		t.Fatalf("parse: %v, args %q, class %s, json %s", err, fs.Args(), fs.Lookup("class").Value, fs.Lookup("json").Value)
	}
}

// -h and --help on any command, or `help <command>`, print its usage on standard output and
// exit 0; nothing is started and nothing is written on standard error.
func TestHelpPrintsUsageAndExitsZero(t *testing.T) {
	for _, args := range [][]string{
		{"-h"}, {"--help"}, {"help"}, {"dev", "-h"}, {"worker", "--help"}, {"projector", "-h"}, {"serve", "--help"},
		{"emulator", "-h"}, {"classify", "--help"}, {"status", "-h"}, {"errors", "-h"}, {"errors", "--help"},
		{"errors", "list", "-h"}, {"errors", "show", "2", "--help"}, {"errors", "replay", "--help"},
		{"errors", "delete", "-h"}, {"help", "errors"}, {"help", "worker"},
	} {
		var out, errOut bytes.Buffer
		code := run(context.Background(), args, &out, &errOut)
		if code != 0 || !strings.Contains(out.String(), "Usage") || errOut.Len() != 0 {
			t.Errorf("dvsync %s: exit %d, stdout %q, stderr %q", strings.Join(args, " "), code, out.String(), errOut.String())
		}
	}
	var out, errOut bytes.Buffer
	if run(context.Background(), []string{"errors", "show", "--help"}, &out, &errOut); !strings.Contains(out.String(), "errors show <id>") ||
		!strings.Contains(out.String(), "-json") {
		t.Errorf("errors show --help: %q", out.String())
	}
	// A mistake is still a mistake: exit 2, told on standard error.
	out.Reset()
	if code := run(context.Background(), []string{"errors", "list", "--no-such-flag"}, &out, &errOut); code != 2 ||
		!strings.Contains(errOut.String(), "no-such-flag") || out.Len() != 0 {
		t.Errorf("an unknown flag: exit %d, stdout %q, stderr %q", code, out.String(), errOut.String())
	}
}

// Flags come before or after the arguments; an answer the API refuses (a 404, a 409, a 502 of a
// proxy in front of it) exits 1 with the API's message on standard error.
func TestCLIFlagsAnywhereAndRefusalsExitNonZero(t *testing.T) {
	h := startManualReplay(t)
	base := h.api()
	cust, cur := h.key("C71000"), h.key("NOK")
	h.publish("customer", cust, 1, map[string]any{"number": cust, "currencyCode": cur})
	e := h.openError("customer", cust, domain.KindDependencyNotCoupled)
	t.Setenv("DVSYNC_TOKEN", testOperatorToken)
	cli := func(args ...string) (int, string, string) {
		t.Helper()
		var out, errOut bytes.Buffer
		code := run(context.Background(), args, &out, &errOut)
		return code, out.String(), errOut.String()
	}
	id := fmt.Sprint(e.ID)

	code, out, errOut := cli("errors", "show", id, "--json", "--server", base)
	var shown struct{ ID int64 }
	if code != 0 || json.Unmarshal([]byte(out), &shown) != nil || shown.ID != e.ID {
		t.Fatalf("errors show %s --json --server …: exit %d, %q %s", id, code, out, errOut)
	}
	for _, args := range [][]string{
		{"errors", "list", "--class", "coupling", "--q", cust, "--server", base, "--json"},
		{"errors", "list", "--json", "--server", base, "--q", cust, "--class", "coupling"},
	} {
		code, out, errOut := cli(args...)
		var page storage.ErrorPage
		if code != 0 || json.Unmarshal([]byte(out), &page) != nil || len(page.Errors) != 1 || page.Errors[0].ID != e.ID {
			t.Fatalf("dvsync %s: exit %d, %q %s", strings.Join(args, " "), code, out, errOut)
		}
	}
	if code, out, _ := cli("errors", "list", "--server", base, "--class", "setup", "--q", cust); code != 0 || strings.Contains(out, cust) {
		t.Fatalf("--class setup lists a coupling error: exit %d\n%s", code, out)
	}

	h.publish("currency", cur, 1, map[string]any{"code": isoCode(cur)})
	h.waitCoupled("currency", cur, 1)
	if code, out, errOut := cli("errors", "replay", id, "--server", base); code != 0 || !strings.Contains(out, "published") {
		t.Fatalf("errors replay %s: exit %d, %q %q", id, code, out, errOut)
	}
	h.waitCoupled("customer", cust, 1)
	h.eventually("the replayed error to be resolved", func() bool {
		d, err := h.store.GetError(context.Background(), e.ID)
		return err == nil && d.Status == storage.ErrorResolved
	})
	// 409: the error is resolved; the reason is the API's.
	code, out, errOut = cli("errors", "replay", id, "--server", base)
	if code != 1 || !strings.Contains(errOut, "error "+id+": not_replayable") || strings.Contains(out, "not_replayable") {
		t.Fatalf("replaying a resolved error: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// --json still prints the results for scripts, and the exit status still says no.
	code, out, errOut = cli("errors", "replay", id, "--json", "--server", base)
	if code != 1 || !strings.Contains(out, `"not_replayable"`) || !strings.Contains(errOut, "not_replayable") {
		t.Fatalf("errors replay --json of a resolved error: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// 404 of a replay and of a show.
	if code, _, errOut := cli("errors", "replay", "999999999", "--server", base); code != 1 || !strings.Contains(errOut, "error 999999999: not_found") {
		t.Fatalf("replaying a missing error: exit %d, %q", code, errOut)
	}
	if code, _, errOut := cli("errors", "show", "999999999", "--server", base); code != 1 || !strings.Contains(errOut, "there is no error 999999999") {
		t.Fatalf("showing a missing error: exit %d, %q", code, errOut)
	}
	if code, _, errOut := cli("errors", "delete", "999999999", "--server", base); code != 1 || !strings.Contains(errOut, "there is no error 999999999") {
		t.Fatalf("deleting a missing error: exit %d, %q", code, errOut)
	}

	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "<html>upstream down</html>", http.StatusBadGateway)
	}))
	defer proxy.Close()
	if code, _, errOut := cli("status", "--server", proxy.URL); code != 1 || !strings.Contains(errOut, "the API answered 502 Bad Gateway") {
		t.Fatalf("a 502 of a proxy: exit %d, %q", code, errOut)
	}
}
