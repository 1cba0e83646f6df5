package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	neturl "net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/natsjs"
	"github.com/dvsync/dvsync/infra/postgres"
	"github.com/dvsync/dvsync/infra/postgres/pgtest"
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

func TestDevRunsTheWholeProductAndStopsCleanly(t *testing.T) {
	// A database of its own: the demo's records have fixed keys.
	devDB, drop, err := pgtest.Database("dev")
	if err != nil {
		t.Fatal(err)
	}
	defer drop()
	t.Setenv("DATABASE_URL", devDB)
	t.Setenv("NATS_URL", "")
	t.Setenv("DATAVERSE_URL", "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"dev", "--nats-listen", "127.0.0.1:-1", "--http-listen", "127.0.0.1:0",
			"--emulator-listen", "127.0.0.1:0", "--data-dir", t.TempDir()}, &out, &errOut)
	}()

	api := regexp.MustCompile(`Errors API\s+(\S+)`)
	tokenLine := regexp.MustCompile(`Token\s+(\S+)`)
	var url, token string
	deadline := time.Now().Add(30 * time.Second)
	for url == "" {
		if m := api.FindStringSubmatch(out.String()); m != nil && strings.Contains(out.String(), "Demo") {
			url, token = m[1], tokenLine.FindStringSubmatch(out.String())[1]
		}
		select {
		case code := <-done:
			t.Fatalf("dvsync dev exited %d early: %s", code, errOut.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("dvsync dev printed no addresses: %s %s", out.String(), errOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	kinds := map[domain.Kind]bool{}
	for time.Now().Before(deadline) && !(kinds[domain.KindDependencyNotCoupled] && kinds[domain.KindMissingPrivilege]) {
		req, _ := http.NewRequest("GET", url+"?status=open", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			var body struct{ Errors []postgres.StoredError }
			_ = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			for _, e := range body.Errors {
				if (e.Key == "C20000" || e.Key == "1000") && e.Table != "" {
					kinds[e.Kind] = true
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !kinds[domain.KindDependencyNotCoupled] || !kinds[domain.KindMissingPrivilege] {
		t.Fatalf("the demo shows %v; want a coupling and a setup error", kinds)
	}
	// The server is shown without credentials; dvsync's own never appear.
	natsURL, err := neturl.Parse(regexp.MustCompile(`NATS\s+(\S+)`).FindStringSubmatch(out.String())[1])
	if err != nil || natsURL.User != nil {
		t.Fatalf("the NATS address %v (%v) must carry no credentials", natsURL, err)
	}
	// The README's next step: the printed nats line, as the publisher, publishes currency USD,
	// and C20000, which waited for it, syncs.
	pub := regexp.MustCompile(`nats -s (\S+) pub (\S+) -H Nats-Msg-Id:(\S+) '([^']+)'`).FindStringSubmatch(out.String())
	if pub == nil {
		t.Fatalf("dvsync dev printed no nats pub line: %s", out.String())
	}
	if u, err := neturl.Parse(pub[1]); err != nil || u.User.Username() != natsjs.PublisherUser {
		t.Fatalf("the nats pub line signs in as %v (%v), want the publisher", u, err)
	}
	nc, err := nats.Connect(pub[1])
	if err != nil {
		t.Fatalf("the printed publisher credentials: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if ack, err := js.PublishMsg(ctx, &nats.Msg{Subject: pub[2], Data: []byte(pub[4])}, jetstream.WithMsgID(pub[3])); err != nil || ack.Stream != natsjs.ChangesStream {
		t.Fatalf("the printed nats pub line as the publisher: ack %+v, %v", ack, err)
	}
	couplings := strings.Replace(url, "/errors", "/couplings/customer/C20000", 1)
	for status := ""; status != string(domain.CouplingSynced); {
		if time.Now().After(deadline.Add(30 * time.Second)) {
			t.Fatalf("customer C20000 is %q after currency USD was published; want synced", status)
		}
		time.Sleep(50 * time.Millisecond)
		req, _ := http.NewRequest("GET", couplings, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			continue
		}
		var c struct{ Status string }
		_ = json.NewDecoder(resp.Body).Decode(&c)
		resp.Body.Close()
		status = c.Status
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("dvsync dev exited %d after SIGTERM: %s", code, errOut.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("dvsync dev did not stop within 30s of being cancelled")
	}
	// Signed in as dvsync, its processes did everything without a refusal.
	if strings.Contains(strings.ToLower(errOut.String()), "permissions violation") {
		t.Fatalf("the NATS server refused dvsync something: %s", errOut.String())
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
