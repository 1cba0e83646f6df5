package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/natsjs"
	"github.com/dvsync/dvsync/infra/postgres/pgtest"
	"github.com/dvsync/dvsync/infra/storage"
)

// syncBuffer is a bytes.Buffer safe for a command writing while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func TestUsageErrorsExitWithTwo(t *testing.T) {
	t.Setenv("NATS_URL", "")
	t.Setenv("DATABASE_URL", "")
	t.Setenv("DATAVERSE_URL", "")
	for _, args := range [][]string{{}, {"frobnicate"}, {"worker"}, {"projector", "--no-such-flag"}} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), args, &out, &errOut); code != 2 {
			t.Errorf("dvsync %v exited %d, want 2 (stderr %q)", args, code, errOut.String())
		}
	}
	var out, errOut bytes.Buffer
	run(context.Background(), []string{"worker"}, &out, &errOut)
	for _, want := range []string{"NATS_URL", "DATABASE_URL", "DATAVERSE_URL"} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("a worker without configuration does not say %s is missing: %q", want, errOut.String())
		}
	}
}

func TestSecretsStayOutOfErrors(t *testing.T) {
	srv, err := natsjs.StartEmbedded("127.0.0.1", -1, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	// NATS answers; PostgreSQL does not, so the error is about the URL holding the password.
	t.Setenv("DATABASE_URL", "postgres://dvsync:hunter2-secret@127.0.0.1:1/x?sslmode=disable&connect_timeout=1")
	t.Setenv("NATS_URL", srv.ClientURL())
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"projector", "--http-listen", "127.0.0.1:0"}, &out, &errOut); code != 1 {
		t.Fatalf("exit %d, want 1: %s", code, errOut.String())
	}
	if !strings.Contains(errOut.String(), "127.0.0.1") {
		t.Fatalf("the error does not say which database failed: %s", errOut.String())
	}
	if strings.Contains(errOut.String()+out.String(), "hunter2-secret") {
		t.Fatalf("the database password appears in the output: %s", errOut.String())
	}
}

// devRun is one `dvsync dev` process started by a test, and what it printed.
type devRun struct {
	t           *testing.T
	cancel      context.CancelFunc
	done        chan int
	out, errOut *syncBuffer
	web, token  string // the page's address and the operator token, from the banner
	natsURL     string // the publisher's, from the export line
}

// startDev runs `dvsync dev` on random ports with args and waits for its banner.
func startDev(t *testing.T, args ...string) *devRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &devRun{t: t, cancel: cancel, done: make(chan int, 1), out: &syncBuffer{}, errOut: &syncBuffer{}}
	go func() {
		d.done <- run(ctx, append([]string{"dev", "--nats-listen", "127.0.0.1:-1", "--http-listen", "127.0.0.1:0",
			"--emulator-listen", "127.0.0.1:0"}, args...), d.out, d.errOut)
	}()
	t.Cleanup(func() { d.stop() })
	exports := regexp.MustCompile(`export DVSYNC_SERVER=(\S+) DVSYNC_TOKEN=(\S+)`)
	deadline := time.Now().Add(60 * time.Second)
	for {
		out := d.out.String()
		if m := exports.FindStringSubmatch(out); m != nil && strings.Contains(out, "Demo") {
			d.web, d.token = m[1], m[2]
			if n := regexp.MustCompile(`export NATS_URL=(\S+)`).FindStringSubmatch(out); n != nil {
				d.natsURL = n[1]
			}
			return d
		}
		select {
		case code := <-d.done:
			t.Fatalf("dvsync dev exited %d early: %s %s", code, out, d.errOut.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("dvsync dev printed no banner: %s %s", out, d.errOut.String())
		}
		time.Sleep(20 * time.Millisecond) // polling the output with a deadline
	}
}

// stop cancels dev (as Ctrl-C does) and checks it exits 0.
func (d *devRun) stop() {
	if d.cancel == nil {
		return
	}
	d.cancel()
	d.cancel = nil
	select {
	case code := <-d.done:
		if code != 0 {
			d.t.Errorf("dvsync dev exited %d when stopped: %s", code, d.errOut.String())
		}
	case <-time.After(30 * time.Second):
		d.t.Error("dvsync dev did not stop within 30s of being cancelled")
	}
}

// get calls the API with the operator token and decodes the answer.
func (d *devRun) get(path string, out any) int {
	req, _ := http.NewRequest("GET", d.web+path, nil)
	req.Header.Set("Authorization", "Bearer "+d.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	_ = json.NewDecoder(resp.Body).Decode(out)
	return resp.StatusCode
}

// waitFor polls cond until it holds or the deadline passes.
func (d *devRun) waitFor(what string, within time.Duration, cond func() bool) {
	d.t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			d.t.Fatalf("%s: not within %s; dev said %s", what, within, d.errOut.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// demoErrors waits until the API lists the demo's coupling and setup errors, and returns their kinds.
func (d *devRun) demoErrors() map[domain.Kind]bool {
	d.t.Helper()
	kinds := map[domain.Kind]bool{}
	d.waitFor("the demo's coupling and setup errors", 30*time.Second, func() bool {
		var body struct{ Errors []storage.StoredError }
		d.get("/api/v1/errors?status=open", &body)
		for _, e := range body.Errors {
			if e.Key == "C20000" || e.Key == "1000" {
				kinds[e.Kind] = true
			}
		}
		return kinds[domain.KindDependencyNotCoupled] && kinds[domain.KindMissingPrivilege]
	})
	return kinds
}

func (d *devRun) couplingStatus(table, key string) string {
	var c struct{ Status string }
	d.get("/api/v1/couplings/"+table+"/"+key, &c)
	return c.Status
}

// With nothing but its data directory, dev runs the whole product with its demo; the printed
// export lines work (the publisher's NATS_URL publishes currency USD and C20000, which waited for
// it, syncs); a restart finds its couplings, errors and token as they were and publishes no demo
// again; --fresh starts over.
func TestDevRunsTheWholeProductAndKeepsItsState(t *testing.T) {
	t.Setenv("DATABASE_URL", "")
	t.Setenv("NATS_URL", "")
	t.Setenv("DATAVERSE_URL", "")
	dir := t.TempDir()
	d := startDev(t, "--data-dir", dir)
	d.demoErrors()
	if !strings.Contains(d.out.String(), "sign in with this token") || !strings.Contains(d.out.String(), "embedded SQLite") {
		t.Fatalf("the banner does not say how to sign in or which store it uses: %s", d.out.String())
	}
	natsURL, err := neturl.Parse(regexp.MustCompile(`NATS\s+(\S+)`).FindStringSubmatch(d.out.String())[1])
	if err != nil || natsURL.User != nil {
		t.Fatalf("the NATS address %v (%v) must carry no credentials", natsURL, err)
	}
	// The README's next step, as the nats CLI does it with the exported NATS_URL.
	pub := regexp.MustCompile(`nats pub (\S+) -H Nats-Msg-Id:(\S+) '([^']+)'`).FindStringSubmatch(d.out.String())
	if pub == nil || d.natsURL == "" {
		t.Fatalf("dvsync dev printed no nats pub line or NATS_URL: %s", d.out.String())
	}
	if u, err := neturl.Parse(d.natsURL); err != nil || u.User.Username() != natsjs.PublisherUser {
		t.Fatalf("the exported NATS_URL signs in as %v (%v), want the publisher", u, err)
	}
	nc, err := nats.Connect(d.natsURL)
	if err != nil {
		t.Fatalf("the exported NATS_URL: %v", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if ack, err := js.PublishMsg(context.Background(), &nats.Msg{Subject: pub[1], Data: []byte(pub[3])}, jetstream.WithMsgID(pub[2])); err != nil || ack.Stream != natsjs.ChangesStream {
		t.Fatalf("the printed nats pub line as the publisher: ack %+v, %v", ack, err)
	}
	nc.Close()
	d.waitFor("customer C20000 synced after currency USD", 30*time.Second, func() bool { return d.couplingStatus("customer", "C20000") == "synced" })
	token, emu := d.token, regexp.MustCompile(`Dataverse\s+(\S+)`).FindStringSubmatch(d.out.String())[1]
	accounts := func() int {
		resp, err := http.Get(emu + "/_emulator/rows/accounts")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct{ Value []map[string]any }
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return len(body.Value)
	}
	rows := accounts()
	// A second dev on the same directory would share its store: it is refused, --fresh too.
	var out2, err2 syncBuffer
	if code := run(context.Background(), []string{"dev", "--data-dir", dir, "--fresh", "--nats-listen", "127.0.0.1:-1",
		"--http-listen", "127.0.0.1:0", "--emulator-listen", "127.0.0.1:0"}, &out2, &err2); code == 0 || !strings.Contains(err2.String(), "another dvsync dev") {
		t.Fatalf("a second dev on a directory in use: exit %d, %s", code, err2.String())
	}
	d.stop()
	// Signed in as dvsync, its processes did everything without a refusal.
	if strings.Contains(strings.ToLower(d.errOut.String()), "permissions violation") {
		t.Fatalf("the NATS server refused dvsync something: %s", d.errOut.String())
	}

	// In the shell where the printed exports were pasted, dev still starts its own NATS.
	t.Setenv("NATS_URL", d.natsURL)
	again := startDev(t, "--data-dir", dir)
	t.Setenv("NATS_URL", "")
	if again.token != token {
		t.Fatalf("the token changed across a restart: %s, then %s", token, again.token)
	}
	if !strings.Contains(again.out.String(), "at this data directory's first start") {
		t.Fatalf("the restart says it published the demo again: %s", again.out.String())
	}
	if st := again.couplingStatus("customer", "C20000"); st != "synced" {
		t.Fatalf("after a restart customer C20000 is %q, want synced as before", st)
	}
	var body struct{ Errors []storage.StoredError }
	again.get("/api/v1/errors?status=open&key=1000", &body)
	if len(body.Errors) != 1 || body.Errors[0].Kind != domain.KindMissingPrivilege {
		t.Fatalf("after a restart the setup error of item 1000 is %+v, want it kept", body.Errors)
	}
	// The emulator kept its rows too: the couplings still name rows that exist.
	emu = regexp.MustCompile(`Dataverse\s+(\S+)`).FindStringSubmatch(again.out.String())[1]
	if n := accounts(); n != rows || n < 2 {
		t.Fatalf("after a restart the emulator has %d accounts, want the %d it had", n, rows)
	}
	again.stop()

	fresh := startDev(t, "--data-dir", dir, "--fresh")
	if fresh.token == token || !strings.Contains(fresh.out.String(), "published now") {
		t.Fatalf("--fresh kept the token or published no demo: %s", fresh.out.String())
	}
	fresh.demoErrors()
	if st := fresh.couplingStatus("customer", "C20000"); st == "synced" {
		t.Fatal("--fresh kept C20000's coupling")
	}
}

// With DATABASE_URL naming a database that does not exist yet, dev creates it and keeps its state there.
func TestDevCreatesTheDatabaseItIsGiven(t *testing.T) {
	u, err := neturl.Parse(pgtest.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("dvsync_test_devcreate_%d", time.Now().UnixNano())
	u.Path = "/" + name
	t.Setenv("DATABASE_URL", u.String())
	t.Setenv("NATS_URL", "")
	t.Setenv("DATAVERSE_URL", "")
	admin, err := pgx.Connect(context.Background(), pgtest.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	defer admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)") //nolint:errcheck
	d := startDev(t, "--data-dir", t.TempDir())
	d.demoErrors()
	if !strings.Contains(d.out.String(), "PostgreSQL, DATABASE_URL") {
		t.Fatalf("the banner does not name the PostgreSQL store: %s", d.out.String())
	}
	d.stop()
	var n int
	if err := admin.QueryRow(context.Background(), `SELECT count(*) FROM pg_database WHERE datname = $1`, name).Scan(&n); err != nil || n != 1 {
		t.Fatalf("database %s: %d (%v), want created", name, n, err)
	}
	// --fresh recreates a database dev created, and refuses to drop one it did not.
	fresh := startDev(t, "--data-dir", t.TempDir(), "--fresh")
	fresh.demoErrors()
	fresh.stop()
	other := name + "_theirs"
	if _, err := admin.Exec(context.Background(), "CREATE DATABASE "+other); err != nil {
		t.Fatal(err)
	}
	defer admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+other+" WITH (FORCE)") //nolint:errcheck
	u.Path = "/" + other
	t.Setenv("DATABASE_URL", u.String())
	var out, errOut syncBuffer
	if code := run(context.Background(), []string{"dev", "--data-dir", t.TempDir(), "--fresh", "--nats-listen", "127.0.0.1:-1",
		"--http-listen", "127.0.0.1:0", "--emulator-listen", "127.0.0.1:0"}, &out, &errOut); code == 0 || !strings.Contains(errOut.String(), "not created by dvsync dev") {
		t.Fatalf("--fresh on a database dev did not create: exit %d, %s", code, errOut.String())
	}
	if err := admin.QueryRow(context.Background(), `SELECT count(*) FROM pg_database WHERE datname = $1`, other).Scan(&n); err != nil || n != 1 {
		t.Fatalf("--fresh dropped a database dev did not create")
	}
}

// A key/value connection string shows without its password, as a URL does.
func TestDatabaseURLsShowWithoutPasswords(t *testing.T) {
	for raw, want := range map[string]string{
		"postgres://u:hunter2@db/x":                 "postgres://u:xxxxx@db/x",
		"host=db user=u password=hunter2 dbname=x":  "host=db user=u password=xxxxx dbname=x",
		"host=db password='hunter 2' dbname=x":      "host=db password=xxxxx dbname=x",
		"sqlite:/home/u/.local/share/dvsync/dev.db": "sqlite:/home/u/.local/share/dvsync/dev.db",
	} {
		if got := redactURL(raw); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", raw, got, want)
		}
	}
}

// inNetns is set in the test binary that TestDevNeedsNoPostgreSQL runs in a network namespace of
// its own, where nothing listens but what the test starts.
const inNetns = "DVSYNC_TEST_IN_NETNS"

// dvsync dev needs nothing installed: in a network namespace where no PostgreSQL (nor anything
// else) can be reached, it runs the demo, and its errors are listed by the API.
func TestDevNeedsNoPostgreSQL(t *testing.T) {
	if os.Getenv(inNetns) == "" {
		unshare, err := exec.LookPath("unshare")
		if _, ipErr := exec.LookPath("ip"); err != nil || ipErr != nil {
			t.Skip("unshare (util-linux) or ip (iproute2) is not installed: no network namespace to run dev without PostgreSQL")
		}
		cmd := exec.Command(unshare, "--net", "--", "sh", "-c", `ip link set lo up && exec "$@"`, "sh",
			os.Args[0], "-test.run", "^TestDevNeedsNoPostgreSQL$", "-test.count", "1")
		cmd.Env = append(os.Environ(), inNetns+"=1")
		out, err := cmd.CombinedOutput()
		if strings.Contains(string(out), "Operation not permitted") {
			t.Skipf("this machine lets no test create a network namespace: %s", out)
		}
		if err != nil || !strings.Contains(string(out), "PASS") {
			t.Fatalf("dev in a namespace without PostgreSQL: %v\n%s", err, out)
		}
		t.Logf("in a network namespace of its own:\n%s", out)
		return
	}
	if c, err := net.DialTimeout("tcp", "127.0.0.1:5432", time.Second); err == nil {
		c.Close()
		t.Fatal("PostgreSQL answers in this namespace; the test would prove nothing")
	}
	t.Setenv("DATABASE_URL", "")
	t.Setenv("NATS_URL", "")
	t.Setenv("DATAVERSE_URL", "")
	d := startDev(t, "--data-dir", t.TempDir())
	if kinds := d.demoErrors(); len(kinds) < 2 {
		t.Fatalf("demo errors %v", kinds)
	}
}

func TestEmulatorCommandServesDataverseAndHealth(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"emulator", "--listen", "127.0.0.1:0"}, &out, &errOut) }()
	re := regexp.MustCompile(`DATAVERSE_URL=(\S+)`)
	var base string
	for deadline := time.Now().Add(10 * time.Second); base == ""; {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			base = m[1]
		} else if time.Now().After(deadline) {
			t.Fatalf("no address printed: %s", errOut.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200, "/api/data/v9.2/accounts": 401} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	if strings.Contains(out.String(), "emulator-secret") {
		t.Error("the emulator printed its client secret")
	}
	// dvsync probe, the containers' health check: 0 on a 200, 1 on any other answer or none.
	for url, want := range map[string]int{base + "/readyz": 0, base + "/api/data/v9.2/accounts": 1, "http://127.0.0.1:1/readyz": 1} {
		var pout, perr syncBuffer
		if code := run(ctx, []string{"probe", "--timeout", "2s", url}, &pout, &perr); code != want {
			t.Errorf("dvsync probe %s: exit %d, want %d (%s)", url, code, want, perr.String())
		}
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func TestEmulatorRejectsABadDefinitionFile(t *testing.T) {
	bad := t.TempDir() + "/defs.json"
	if err := os.WriteFile(bad, []byte(`{"entities":[{"logicalName":"x"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"emulator", "--definitions", bad}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "defs.json") {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
}

func TestClassifyCommand(t *testing.T) {
	defer func(old io.Reader) { stdin = old }(stdin)
	body := `{"error":{"code":"0x80044331","message":"A validation error occurred.  The length of the 'name' attribute of the 'account' entity exceeded the maximum allowed length of '160'."}}`
	stdin = strings.NewReader(body)
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"classify", "--status", "400"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var got struct {
		Class, Kind, Message, Resolution string
		Details                          map[string]string
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.Class != "coupling" || got.Kind != "invalid_data" || got.Details["attribute"] != "name" || got.Details["limit"] != "160" || got.Resolution == "" {
		t.Fatalf("classified %+v", got)
	}
	stdin = strings.NewReader("<html>not a Dataverse error</html>")
	out.Reset()
	if code := run(context.Background(), []string{"classify"}, &out, &errOut); code != 2 {
		t.Fatalf("unreadable input: exit %d", code)
	}
}
