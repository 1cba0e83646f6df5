package main

// The alert rules and the dashboard name metrics by string; these tests start the processes and
// check that every name they use is exported, and that every alert is documented and tested.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/emulator"
	"github.com/dvsync/dvsync/infra/httpapi"
	"github.com/dvsync/dvsync/infra/natsjs"
)

const (
	alertsFile    = "../../deployments/prometheus/alerts.yml"
	alertTests    = "../../deployments/prometheus/alerts_test.yml"
	readmeFile    = "../../README.md"
	dashboardFile = "../../deployments/grafana/dashboards/dvsync.json"
)

// processes are a worker, a projector and serve of one harness, each with its HTTP endpoint.
type processes struct {
	worker, projector, serve string // base URLs
}

func startProcesses(t *testing.T, o options) (*harness, processes) {
	t.Helper()
	h := startWith(t, o)
	serve := newStack(h.cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	if err := connectAll(ctx, serve, false); err != nil {
		cancel()
		t.Fatal(err)
	}
	tokens, err := httpapi.ParseTokens("")
	if err != nil {
		t.Fatal(err)
	}
	tokens.Add("test", httpapi.RoleOperator, httpapi.NewToken())
	var wg sync.WaitGroup
	listen := func(s *stack, tokens *httpapi.Tokens) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.serveHTTP(ctx, ln, tokens); err != nil && ctx.Err() == nil {
				t.Errorf("HTTP server stopped: %v", err)
			}
		}()
		return "http://" + ln.Addr().String()
	}
	p := processes{worker: listen(h.workers[0], nil), projector: listen(h.projector, nil), serve: listen(serve, tokens)}
	// Runs before the harness's own cleanup (last registered, first run).
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		serve.close()
	})
	return h, p
}

// exposition is one scrape of /metrics: each family's type, and each sample's value by its name
// and labels as written.
type exposition struct {
	types   map[string]string
	samples map[string]float64
}

func scrape(t *testing.T, base string) exposition {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s/metrics: %d %v", base, resp.StatusCode, err)
	}
	e := exposition{types: map[string]string{}, samples: map[string]float64{}}
	for _, line := range strings.Split(string(body), "\n") {
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			e.types[f[2]] = f[3]
		} else if line != "" && !strings.HasPrefix(line, "#") {
			i := strings.LastIndexByte(line, ' ')
			v, err := strconv.ParseFloat(line[i+1:], 64)
			if err != nil {
				t.Fatalf("unreadable sample %q", line)
			}
			e.samples[line[:i]] = v
		}
	}
	return e
}

// exports reports whether a name of a PromQL expression is a series of the exposition: a family,
// or a histogram's or summary's _bucket, _sum or _count.
func (e exposition) exports(name string) bool {
	if _, ok := e.types[name]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if typ := e.types[base]; typ == "histogram" || (typ == "summary" && suffix != "_bucket") {
				return true
			}
		}
	}
	return false
}

func getStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Every metric name the alert rules and the dashboard use is exported by a worker, a projector
// or serve that have synced a change, stored an error, replayed it and been throttled.
func TestEveryMetricOfTheAlertsAndTheDashboardIsExported(t *testing.T) {
	h, p := startProcesses(t, options{workers: 1, tweak: func(c *Config) { c.Dataverse.BatchSize = 1 }})

	// A coupling error: the customer's currency is not coupled yet.
	cust, cur := h.key("C1"), h.key("EUR")
	h.publish("customer", cust, 1, map[string]any{"number": cust, "currencyCode": cur})
	h.waitError("customer", cust, domain.KindDependencyNotCoupled)
	ledger := scrape(t, p.projector)
	if n := ledger.samples[`dvsync_open_errors{class="coupling",kind="dependency_not_coupled"}`]; n < 1 {
		t.Errorf("the projector exports %v open dependency_not_coupled errors; one was just stored", n)
	}
	if ledger.samples[`dvsync_ledger_stats_up`] != 1 {
		t.Error("the projector could not count the ledger")
	}

	// Changes against a throttling Dataverse: retried, counted, synced. The currency couples,
	// and the customer is replayed by the projector and syncs.
	h.emu.SetLimits(emulator.Limits{Requests: 2, Window: 2 * time.Second})
	keys := []string{cur}
	for i := 0; i < 3; i++ {
		keys = append(keys, h.key(fmt.Sprintf("T%d", i)))
	}
	for _, k := range keys {
		h.publish("currency", k, 1, map[string]any{"code": isoCode(k)})
	}
	for _, k := range keys {
		h.waitCoupled("currency", k, 1)
	}
	h.waitCoupled("customer", cust, 1)
	h.eventually("the projector to count its dependency replay", func() bool {
		_, ok := scrape(t, p.projector).types["dvsync_replays_total"]
		return ok
	})
	h.eventually("the worker to count a 429", func() bool {
		for name, v := range scrape(t, p.worker).samples {
			if strings.HasPrefix(name, "dvsync_dataverse_user_throttled_total{") && v > 0 {
				return true
			}
		}
		return false
	})
	h.emu.SetLimits(emulator.Limits{})

	scrapes := map[string]exposition{"worker": scrape(t, p.worker), "projector": scrape(t, p.projector), "serve": scrape(t, p.serve)}
	for proc, base := range map[string]string{"worker": p.worker, "projector": p.projector, "serve": p.serve} {
		for _, path := range []string{"/healthz", "/readyz"} {
			if code := getStatus(t, base+path); code != http.StatusOK {
				t.Errorf("%s: GET %s = %d, want 200", proc, path, code)
			}
		}
		if _, ok := scrapes[proc].types["dvsync_build_info"]; !ok {
			t.Errorf("%s exports no dvsync_build_info", proc)
		}
	}
	// What each process owns, read without error: its consumer's backlog, the ledger's counts.
	consumer := func(name, stream string) []string {
		return []string{fmt.Sprintf(`dvsync_nats_consumer_info_up{consumer=%q,stream=%q}`, name, stream),
			fmt.Sprintf(`dvsync_nats_consumer_pending_messages{consumer=%q,stream=%q}`, name, stream),
			fmt.Sprintf(`dvsync_nats_consumer_oldest_pending_age_seconds{consumer=%q,stream=%q}`, name, stream)}
	}
	for proc, want := range map[string][]string{
		"worker":    consumer(natsjs.WorkerConsumer, natsjs.ChangesStream),
		"projector": append(consumer(natsjs.ProjectorConsumer, natsjs.ErrorsStream), `dvsync_ledger_stats_up`),
		"serve":     {`dvsync_ledger_stats_up`},
	} {
		for _, series := range want {
			v, ok := scrapes[proc].samples[series]
			if up := strings.Contains(series, "_up"); !ok || up && v != 1 {
				t.Errorf("%s exports %s = %v (present: %v); want it present, and 1 if it says up", proc, series, v, ok)
			}
		}
	}

	names := map[string][]string{} // metric name → where it is used
	for where, exprs := range usedExpressions(t) {
		for _, expr := range exprs {
			for _, n := range promqlNames(expr) {
				names[n] = append(names[n], where)
			}
		}
	}
	if len(names) < 20 {
		t.Fatalf("found only %d metric names in the alerts and the dashboard: %v", len(names), names)
	}
	for name, where := range names {
		if name == "up" { // Prometheus's own, per scrape target
			continue
		}
		exported := false
		for _, e := range scrapes {
			exported = exported || e.exports(name)
		}
		if !exported {
			t.Errorf("%s (used in %s) is exported by no process", name, strings.Join(slices.Compact(where), ", "))
		}
	}
}

// usedExpressions are the PromQL expressions of the alert rules and of the dashboard's targets
// and variables, by file.
func usedExpressions(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, r := range alertRules(t) {
		out["alerts.yml"] = append(out["alerts.yml"], r.Expr)
	}
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash map[string]any
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	labelValues := regexp.MustCompile(`label_values\(\s*([^,)]+)`)
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if expr, ok := v["expr"].(string); ok {
				out["dvsync.json"] = append(out["dvsync.json"], expr)
			}
			if q, ok := v["query"].(string); ok {
				for _, m := range labelValues.FindAllStringSubmatch(q, -1) {
					out["dvsync.json"] = append(out["dvsync.json"], m[1])
				}
			}
			for _, c := range v {
				walk(c)
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		}
	}
	walk(dash)
	return out
}

var (
	promqlString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	promqlMatchers = regexp.MustCompile(`\{[^}]*\}`)
	promqlRange    = regexp.MustCompile(`\[[^\]]*\]`)
	promqlLabels   = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promqlToken    = regexp.MustCompile(`[0-9][0-9a-zA-Z_.]*|[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?`)
	promqlKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "by": true,
		"without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true, "inf": true, "nan": true}
)

// promqlNames returns the metric names an expression selects: every identifier that is not in a
// string, a label matcher, a range, a label list, a function call's name, or a keyword.
func promqlNames(expr string) []string {
	s := promqlString.ReplaceAllString(expr, `""`)
	s = promqlMatchers.ReplaceAllString(s, " ")
	s = promqlRange.ReplaceAllString(s, " ")
	s = promqlLabels.ReplaceAllString(s, " ")
	var names []string
	for _, tok := range promqlToken.FindAllString(s, -1) {
		if tok[0] >= '0' && tok[0] <= '9' || strings.HasSuffix(tok, "(") || promqlKeywords[strings.ToLower(tok)] {
			continue
		}
		names = append(names, tok)
	}
	sort.Strings(names)
	return slices.Compact(names)
}

func TestPromQLNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`sum by (job) (up{job=~"dvsync-.*"}) == 0 or absent(up{job="x"})`:                                   {"up"},
		`histogram_quantile(0.99, sum by (le, method) (rate(a_seconds_bucket{m="b c"}[$__rate_interval])))`: {"a_seconds_bucket"},
		`max(a) by (x) + on (y) group_left (z) b offset 1h > 1e3 and bool c`:                                {"a", "b", "c"},
		`delta(a{k="v"}[1h]) >= 10`: {"a"},
	} {
		if got := promqlNames(expr); !slices.Equal(got, want) {
			t.Errorf("promqlNames(%q) = %v, want %v", expr, got, want)
		}
	}
}

type alertRule struct {
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func alertRules(t *testing.T) []alertRule {
	t.Helper()
	data, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Rules []alertRule `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(data, &f); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	var rules []alertRule
	for _, g := range f.Groups {
		rules = append(rules, g.Rules...)
	}
	if len(rules) == 0 {
		t.Fatalf("%s has no rules", alertsFile)
	}
	return rules
}

// githubAnchor is the anchor GitHub gives a Markdown heading.
func githubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			b.WriteRune(r)
		}
	}
	return b.String()
}

// Every alert has a severity, a summary, a description and a runbook link to a README section
// and alerts_test.yml has
// a case where it fires and one where it does not.
func TestEveryAlertIsDocumentedAndTested(t *testing.T) {
	anchors := map[string]bool{}
	for _, file := range []string{readmeFile} {
		data, err := os.ReadFile(file)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			if h, ok := strings.CutPrefix(line, "#"); ok {
				anchors[githubAnchor(strings.TrimLeft(h, "#"))] = true
			}
		}
	}
	data, err := os.ReadFile(alertTests)
	if err != nil {
		t.Fatal(err)
	}
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal(data, &tests); err != nil {
		t.Fatalf("%s: %v", alertTests, err)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, c := range tests.Tests {
		for _, a := range c.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	const readme = "https://github.com/dvsync/dvsync#"
	for _, r := range alertRules(t) {
		if r.Labels["severity"] != "warning" && r.Labels["severity"] != "critical" {
			t.Errorf("%s: severity %q, want warning or critical", r.Alert, r.Labels["severity"])
		}
		if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
			t.Errorf("%s has no summary or description", r.Alert)
		}
		anchor, ok := strings.CutPrefix(r.Annotations["runbook_url"], readme)
		if !ok || anchor != "alert-"+strings.ToLower(r.Alert) || !anchors[anchor] {
			t.Errorf("%s: runbook_url %q; want %salert-%s, a section of the README", r.Alert,
				r.Annotations["runbook_url"], readme, strings.ToLower(r.Alert))
		}
		if !fires[r.Alert] || !quiet[r.Alert] {
			t.Errorf("%s: alerts_test.yml has a firing case: %v, a quiet case: %v; want both", r.Alert, fires[r.Alert], quiet[r.Alert])
		}
	}
}

// /readyz is 200 once a process is connected and set up, and 503 naming NATS when NATS goes
// away; a scrape then still answers at once, without the consumer's backlog, saying why.
func TestReadyzFollowsNATSAndScrapesDoNotHang(t *testing.T) {
	srv, err := natsjs.StartEmbedded("127.0.0.1", -1, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	cfg := defaultConfig()
	cfg.NATSURL, cfg.DatabaseURL = srv.ClientURL(), testDatabaseURL
	s := newStack(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := connectAll(ctx, s, false); err != nil {
		t.Fatal(err)
	}
	defer s.close()
	s.watchConsumer(natsjs.ChangesStream, natsjs.WorkerConsumer)
	s.watchLedger()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.serveHTTP(ctx, ln, nil) }()
	defer func() { cancel(); <-served }()
	base := "http://" + ln.Addr().String()

	ready := func() (int, map[string]string) {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct{ Checks map[string]string }
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, body.Checks
	}
	code, checks := ready()
	if code != http.StatusOK || checks["nats"] != "ok" || checks["jetstream"] != "ok" || checks["postgres"] != "ok" || checks["running"] != "ok" {
		t.Fatalf("readyz of a connected process: %d %v", code, checks)
	}

	srv.Shutdown()
	srv.WaitForShutdown()
	deadline := time.Now().Add(10 * time.Second)
	// JetStream's check may fail before the client notices the lost connection: wait for both.
	for code, checks = ready(); code != http.StatusServiceUnavailable || checks["nats"] != "unavailable"; code, checks = ready() {
		if time.Now().After(deadline) {
			t.Fatalf("readyz without NATS: %d %v", code, checks)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if checks["postgres"] != "ok" {
		t.Errorf("readyz without NATS names %v", checks)
	}
	start := time.Now()
	e := scrape(t, base)
	if took := time.Since(start); took > consumerRefresh.Timeout+2*time.Second {
		t.Fatalf("a scrape without NATS took %s", took)
	}
	const l = `{consumer="dvsync-worker",stream="DVSYNC_CHANGES"}`
	if _, ok := e.samples["dvsync_nats_consumer_pending_messages"+l]; ok || e.samples["dvsync_nats_consumer_info_up"+l] != 0 ||
		e.samples["dvsync_nats_consumer_info_errors_total"+l] != 1 || e.samples["dvsync_ledger_stats_up"] != 1 {
		t.Errorf("scrape without NATS: backlog present %v, info up %v, errors %v, ledger up %v", ok,
			e.samples["dvsync_nats_consumer_info_up"+l], e.samples["dvsync_nats_consumer_info_errors_total"+l], e.samples["dvsync_ledger_stats_up"])
	}
}
