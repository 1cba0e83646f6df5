package testbed

// The real parts under dvsync: nats-server processes, a private PostgreSQL cluster, the emulator.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	deploynats "github.com/dvsync/dvsync/deployments/nats"
	"github.com/dvsync/dvsync/infra/emulator"
	"github.com/dvsync/dvsync/infra/natsjs"
)

// NATSNode is one nats-server process with its store.
type NATSNode struct {
	Name string
	Port int
	Proc *Proc
}

func (n *NATSNode) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.Port) }

// NATSAuth are the passwords of a scenario's NATS: the users of deployments/nats/accounts.conf
// (dvsync's processes; publishers, who may publish changes only), and the cluster's routes.
type NATSAuth struct {
	Users natsjs.Passwords
	Route string
}

// MaxPayload is the deployment's (deployments/nats/nats-server.conf).
const MaxPayload = 8 << 20

// StartNATS starts one nats-server, or a cluster of size nodes, as deployments/nats configures
// them (its accounts, 8 MB messages), each with a JetStream store under dir, bound to loopback.
func StartNATS(ctx context.Context, sup *Supervisor, bin, dir, logs string, size int, auth NATSAuth) ([]*NATSNode, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "accounts.conf"), []byte(deploynats.Accounts), 0o644); err != nil {
		return nil, err
	}
	nodes := make([]*NATSNode, size)
	routes := make([]int, size)
	for i := range nodes {
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		if routes[i], err = FreePort(); err != nil {
			return nil, err
		}
		nodes[i] = &NATSNode{Name: fmt.Sprintf("nats-%d", i+1), Port: port}
	}
	// The passwords reach the server as the deployment's variables, never in a file.
	env := ChildEnv("DVSYNC_NATS_PASSWORD="+auth.Users.Dvsync, "PUBLISHER_NATS_PASSWORD="+auth.Users.Publisher, "NATS_ROUTE_PASSWORD="+auth.Route)
	for i, n := range nodes {
		store := filepath.Join(dir, n.Name)
		if err := os.MkdirAll(store, 0o755); err != nil {
			return nil, err
		}
		var conf strings.Builder
		fmt.Fprintf(&conf, "server_name: %s\nlisten: \"127.0.0.1:%d\"\nmax_payload: %d\njetstream {\n  store_dir: %q\n  max_memory_store: 64MB\n  max_file_store: 4GB\n}\ninclude accounts.conf\n",
			n.Name, n.Port, MaxPayload, store)
		if size > 1 {
			var peers []string
			for j := range nodes {
				if j != i {
					peers = append(peers, fmt.Sprintf("\"nats-route://route:%s@127.0.0.1:%d\"", auth.Route, routes[j]))
				}
			}
			fmt.Fprintf(&conf, "cluster {\n  name: dvsync-testbed\n  listen: \"127.0.0.1:%d\"\n  authorization {\n    user: route\n    password: $NATS_ROUTE_PASSWORD\n  }\n  routes: [%s]\n}\n",
				routes[i], strings.Join(peers, ", "))
		}
		file := filepath.Join(dir, n.Name+".conf")
		if err := os.WriteFile(file, []byte(conf.String()), 0o644); err != nil {
			return nil, err
		}
		p, err := sup.Start(n.Name, filepath.Join(logs, n.Name+".log"), env, bin, "-c", file)
		if err != nil {
			return nil, err
		}
		n.Proc = p
	}
	return nodes, WaitJetStream(ctx, nodes, auth, 60*time.Second)
}

// NATSURLs are the nodes' URLs for one user, as NATS_URL takes them.
func NATSURLs(nodes []*NATSNode, user, password string) string {
	urls := make([]string, len(nodes))
	for i, n := range nodes {
		urls[i] = natsjs.UserURL(n.URL(), user, password)
	}
	return strings.Join(urls, ",")
}

// WaitJetStream waits until JetStream answers dvsync's user on every running node (in a
// cluster: a meta leader is elected).
func WaitJetStream(ctx context.Context, nodes []*NATSNode, auth NATSAuth, timeout time.Duration) error {
	for _, n := range nodes {
		if !n.Proc.Running() {
			continue
		}
		err := WaitFor(ctx, timeout, 200*time.Millisecond, func() bool {
			nc, err := nats.Connect(n.URL(), nats.UserInfo(natsjs.DvsyncUser, auth.Users.Dvsync), nats.Timeout(time.Second))
			if err != nil {
				return false
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				return false
			}
			actx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			_, err = js.AccountInfo(actx)
			return err == nil
		})
		if err != nil {
			return fmt.Errorf("JetStream on %s did not answer: %w (log: %s)", n.Name, err, n.Proc.Log)
		}
	}
	return nil
}

// PGCluster is a PostgreSQL cluster created with Debian's wrappers, to be dropped after use.
type PGCluster struct {
	Version, Name string
	Port          int
}

// CreatePG creates and starts a private cluster on a free loopback port, trusting local
// connections: never the shared one. Its name is prefix and a random suffix.
func CreatePG(ctx context.Context, prefix string) (*PGCluster, error) {
	entries, err := os.ReadDir("/etc/postgresql")
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL's Debian wrappers (pg_createcluster) are needed: %w", err)
	}
	var versions []string
	for _, e := range entries {
		if e.IsDir() {
			versions = append(versions, e.Name())
		}
	}
	if len(versions) == 0 {
		return nil, errors.New("no PostgreSQL version under /etc/postgresql")
	}
	slices.SortFunc(versions, func(a, b string) int { return atoi(a) - atoi(b) })
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	c := &PGCluster{Version: versions[len(versions)-1], Name: prefix + "_" + hex.EncodeToString(suffix), Port: port}
	if err := pgRun(ctx, "pg_createcluster", c.Version, c.Name, "-p", fmt.Sprint(port), "--start-conf=manual",
		"-o", "max_connections=300", "--", "--auth=trust"); err != nil {
		return nil, err
	}
	if err := c.Start(ctx); err != nil {
		c.Drop(context.WithoutCancel(ctx))
		return nil, err
	}
	return c, nil
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

func pgRun(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// URL is the connection URL of a database of the cluster.
func (c *PGCluster) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.Port, db)
}

// Start starts the cluster and waits until it accepts connections.
func (c *PGCluster) Start(ctx context.Context) error {
	if err := pgRun(ctx, "pg_ctlcluster", "--skip-systemctl-redirect", c.Version, c.Name, "start"); err != nil {
		return err
	}
	return WaitFor(ctx, 60*time.Second, 100*time.Millisecond, func() bool {
		conn, err := pgx.Connect(ctx, c.URL("postgres"))
		if err != nil {
			return false
		}
		conn.Close(ctx)
		return true
	})
}

// Crash stops the cluster the way a crash does: immediate shutdown, recovery at the next start.
func (c *PGCluster) Crash(ctx context.Context) error {
	return pgRun(ctx, "pg_ctlcluster", "--skip-systemctl-redirect", c.Version, c.Name, "stop", "-m", "immediate")
}

// Stop stops the cluster, keeping it.
func (c *PGCluster) Stop(ctx context.Context) error {
	return pgRun(ctx, "pg_ctlcluster", "--skip-systemctl-redirect", c.Version, c.Name, "stop", "-m", "fast")
}

// Drop stops and removes the cluster.
func (c *PGCluster) Drop(ctx context.Context) error {
	return pgRun(ctx, "pg_dropcluster", "--stop", c.Version, c.Name)
}

// CreateDB creates a fresh database.
func (c *PGCluster) CreateDB(ctx context.Context, name string) error {
	return CreateDB(ctx, c.URL("postgres"), name)
}

// DropDB drops a database.
func (c *PGCluster) DropDB(ctx context.Context, name string) error {
	return DropDB(ctx, c.URL("postgres"), name)
}

// CreateDB creates a fresh database on the server adminURL connects to, dropping one of that name
// first.
func CreateDB(ctx context.Context, adminURL, name string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return err
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	return err
}

// DropDB drops a database on the server adminURL connects to, also while clients are connected.
func DropDB(ctx context.Context, adminURL, name string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	return err
}

// Emulator is the `dvsync emulator` process's admin API.
type Emulator struct {
	URL  string
	Proc *Proc
}

// StatusError is an admin route's answer other than 2xx.
type StatusError struct {
	Method, Path string
	Status       int
	Body         string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("emulator %s %s: %d %s: %s", e.Method, e.Path, e.Status, http.StatusText(e.Status), e.Body)
}

// Admin calls one of the emulator's admin routes.
func (e *Emulator) Admin(ctx context.Context, method, path string, body any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, e.URL+path, rd)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("emulator %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return &StatusError{Method: method, Path: path, Status: resp.StatusCode, Body: string(bytes.TrimSpace(msg))}
	}
	return nil
}

// GenerousLimits keep service protection out of the way of scenarios that do not test it: the
// default (6,000 requests in 5 minutes) is less than one full load.
var GenerousLimits = map[string]any{"window": "5m", "requests": 10_000_000, "executionTime": "1000h", "concurrent": 512, "dopHint": 64}

// Reset empties the emulator between scenarios.
func (e *Emulator) Reset(ctx context.Context) error {
	if err := e.Admin(ctx, http.MethodPost, "/_emulator/reset", nil); err != nil {
		return err
	}
	return e.Admin(ctx, http.MethodPost, "/_emulator/limits", GenerousLimits)
}

// Rows reads every row of an entity set.
func (e *Emulator) Rows(ctx context.Context, set string) ([]map[string]any, error) {
	var out struct {
		Value []map[string]any `json:"value"`
	}
	if err := e.Read(ctx, "/_emulator/rows/"+set, &out); err != nil {
		return nil, err
	}
	return out.Value, nil
}

// Read decodes the JSON answer of one of the emulator's admin GET routes into out.
func (e *Emulator) Read(ctx context.Context, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.URL+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("emulator GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("emulator GET %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("emulator GET %s: %w", path, err)
	}
	return nil
}

// StartEmulator starts `dvsync emulator` (bin is the dvsync binary) on a free loopback port and
// waits until it answers.
func StartEmulator(ctx context.Context, sup *Supervisor, bin, log string) (*Emulator, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p, err := sup.Start("emulator", log, ChildEnv(), bin, "emulator", "--listen", addr)
	if err != nil {
		return nil, err
	}
	e := &Emulator{URL: "http://" + addr, Proc: p}
	return e, WaitHealthy(ctx, p, e.URL+"/healthz", 30*time.Second)
}

// DvsyncEnv is the environment of a dvsync process as production configures one: NATS as
// dvsync's user (natsURL holds its password), PostgreSQL, the emulator as Dataverse with its
// default application user, health and metrics on the given loopback port; extra adds or
// overrides variables.
func DvsyncEnv(natsURL, databaseURL string, emu *Emulator, httpPort int, extra ...string) []string {
	return ChildEnv(append([]string{
		"NATS_URL=" + natsURL,
		"DATABASE_URL=" + databaseURL,
		"DATAVERSE_URL=" + emu.URL,
		"DATAVERSE_TOKEN_URL=" + emu.URL + "/" + emulator.DefaultTenant + "/oauth2/v2.0/token",
		"DATAVERSE_CLIENT_ID=" + emulator.DefaultApp.ClientID,
		"DATAVERSE_CLIENT_SECRET=" + emulator.DefaultApp.ClientSecret,
		fmt.Sprintf("DVSYNC_HTTP_LISTEN=127.0.0.1:%d", httpPort),
	}, extra...)...)
}
