package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/dvsync/dvsync/consumers/preflight"
	"github.com/dvsync/dvsync/consumers/syncworker"
	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/dataverse"
	"github.com/dvsync/dvsync/infra/natsjs"
)

// Config is every setting of every subcommand. Environment variables give the defaults; flags
// override them. Secrets come only from the environment, so they never sit in a process list.
type Config struct {
	NATSURL      string
	DatabaseURL  string
	MappingsFile string
	HTTPListen   string
	LogLevel     string
	Dataverse    DataverseConfig
	Topology     natsjs.Topology
	Worker       syncworker.Config
	Skip         domain.SkipPolicy
	// APITokens are "name:role:token" entries (DVSYNC_API_TOKENS), or a file of them, one a line
	// (--tokens-file, DVSYNC_API_TOKENS_FILE); the token may be given as sha256=<hex>.
	APITokens     string
	APITokensFile string
	// SourceURL is a template of a source record's link with {table} and {key} (DVSYNC_SOURCE_URL),
	// for instance a Business Central web client page.
	SourceURL string
	// ReplayDependents makes the projector replay the records that waited for a dependency once
	// it is coupled (DVSYNC_REPLAY_DEPENDENTS, on unless "false").
	ReplayDependents bool
	// SessionKey signs page sessions (DVSYNC_SESSION_KEY, hex); set it when several serve
	// replicas share users.
	SessionKey string
	// PreflightEvery is how often a worker checks the setup again after its check at start
	// (DVSYNC_PREFLIGHT_EVERY, 10m by default; 0 never periodically, only at start).
	PreflightEvery time.Duration
	// PreflightStartTimeout bounds the check at a worker's start (DVSYNC_PREFLIGHT_START_TIMEOUT,
	// 30s): past it the worker logs and consumes.
	PreflightStartTimeout time.Duration
	// LocalCurrency is the source's local currency code (DVSYNC_LOCAL_CURRENCY, Business
	// Central's LCY): the preflight compares it with Dataverse's base currency, and a record's
	// blank currency code means it.
	LocalCurrency string
	// envErrs are the environment's malformed values, for validate to report with the rest.
	envErrs []error
}

// DataverseConfig names the Dataverse environment and the app registration dvsync signs in as.
type DataverseConfig struct {
	URL          string // DATAVERSE_URL, e.g. https://contoso.crm4.dynamics.com
	TenantID     string // DATAVERSE_TENANT_ID
	ClientID     string // DATAVERSE_CLIENT_ID
	ClientSecret string // DATAVERSE_CLIENT_SECRET (never logged)
	TokenURL     string // DATAVERSE_TOKEN_URL, to override Entra ID's token endpoint
	// MaxParallel caps requests in flight (DATAVERSE_MAX_PARALLEL); x-ms-dop-hint lowers it.
	MaxParallel int
	// DuplicateDetection turns on Dataverse's duplicate-detection rules for dvsync's writes.
	DuplicateDetection bool
	// BypassCustomPlugins skips custom synchronous plug-ins (needs prvBypassCustomPlugins).
	BypassCustomPlugins bool
	// IntegrationUser names the application user in resolutions (DATAVERSE_INTEGRATION_USER).
	IntegrationUser string
	// RequestTimeout bounds one request to Dataverse or its token endpoint
	// (DATAVERSE_REQUEST_TIMEOUT; 0 is 30s).
	RequestTimeout time.Duration
	// Clients are app registrations of the same tenant and environment besides or instead of
	// ClientID and ClientSecret (DATAVERSE_CLIENTS, inline JSON, or DATAVERSE_CLIENTS_FILE, for a
	// mounted secret): each is an application user with limits of its own.
	Clients []AppCredentials
	// BatchSize is the most sync calls one $batch carries (DVSYNC_BATCH_SIZE, 1 to 1000; 0 is 100).
	BatchSize int
	// BatchLinger is how long a sync call waits for others to share its $batch
	// (DVSYNC_BATCH_LINGER, at most 1s; 0 waits for none).
	BatchLinger time.Duration
}

// AppCredentials are one app registration's client credentials, as DATAVERSE_CLIENTS lists them.
type AppCredentials struct {
	ClientID     string `json:"clientId"`
	ClientSecret string `json:"clientSecret"`
}

// String names the app without its secret, wherever the credentials are printed.
func (a AppCredentials) String() string { return "app " + a.ClientID }

// GoString is String, for %#v.
func (a AppCredentials) GoString() string { return a.String() }

// Users are the app registrations dvsync signs in as: DATAVERSE_CLIENT_ID's first, then
// DATAVERSE_CLIENTS's.
func (d DataverseConfig) Users() []AppCredentials {
	var out []AppCredentials
	if d.ClientID != "" || d.ClientSecret != "" {
		out = append(out, AppCredentials{ClientID: d.ClientID, ClientSecret: d.ClientSecret})
	}
	return append(out, d.Clients...)
}

// defaultPreflightEvery is how often a worker checks the setup: a role changed by an administrator
// shows within minutes, for a handful of metadata requests.
const defaultPreflightEvery = 10 * time.Minute

// maxBatchLinger bounds DVSYNC_BATCH_LINGER: each sync call may wait that long before it is sent.
const maxBatchLinger = time.Second

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

// envReader reads the environment's typed settings. A malformed value is an error naming its
// variable, never a silent default: 45 meant as seconds would otherwise become 30s. Unset or
// blank keeps the default. The typed settings are no secrets, so their value is shown (quoted,
// and cut short); a secret's errors never quote it (see sessionKey).
type envReader struct{ errs []error }

// value is the variable's value without surrounding blanks (an env file's CR, say).
func (e *envReader) value(name string) (string, bool) {
	v := strings.TrimSpace(os.Getenv(name))
	return v, v != ""
}

func (e *envReader) fail(name, v, want string) {
	e.errs = append(e.errs, fmt.Errorf("%s=%s is not %s", name, shown(v), want))
}

// shown quotes a setting that is no secret for an error, escaping control characters, and cuts
// a long one short.
func shown(v string) string {
	if r := []rune(v); len(r) > 40 {
		v = string(r[:40]) + "…"
	}
	return strconv.Quote(v)
}

func (e *envReader) boolean(name string, def bool) bool {
	v, ok := e.value(name)
	if !ok {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		e.fail(name, v, "true or false")
		return def
	}
	return b
}

func (e *envReader) integer(name string, def int) int {
	v, ok := e.value(name)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		e.fail(name, v, "a whole number")
		return def
	}
	return n
}

// clients reads DATAVERSE_CLIENTS or DATAVERSE_CLIENTS_FILE. Its errors never quote the JSON:
// it holds secrets.
func (e *envReader) clients() []AppCredentials {
	inline, isInline := e.value("DATAVERSE_CLIENTS")
	file, isFile := e.value("DATAVERSE_CLIENTS_FILE")
	var data []byte
	name := "DATAVERSE_CLIENTS"
	switch {
	case isInline && isFile:
		e.errs = append(e.errs, errors.New("DATAVERSE_CLIENTS and DATAVERSE_CLIENTS_FILE are both set: set one"))
		return nil
	case isFile:
		var err error
		if data, err = os.ReadFile(file); err != nil {
			e.errs = append(e.errs, fmt.Errorf("DATAVERSE_CLIENTS_FILE: %w", err))
			return nil
		}
		name = "DATAVERSE_CLIENTS_FILE " + shown(file)
	case isInline:
		data = []byte(inline)
	default:
		return nil
	}
	apps, err := parseClients(data)
	if err != nil {
		e.errs = append(e.errs, fmt.Errorf("%s %w; write [{\"clientId\":\"…\",\"clientSecret\":\"…\"}, …]", name, err))
	}
	return apps
}

// parseClients reads a JSON list of {"clientId","clientSecret"}. Its errors say where, never what.
func parseClients(data []byte) ([]AppCredentials, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var apps []AppCredentials
	err := dec.Decode(&apps)
	if err == nil && dec.More() {
		err = errors.New("more after the list")
	}
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return nil, fmt.Errorf("is not JSON (at byte %d)", syntax.Offset)
	case errors.As(err, &typ):
		return nil, fmt.Errorf("is not a list of objects of strings (at byte %d)", typ.Offset)
	case err != nil && strings.HasPrefix(err.Error(), "json: unknown field"):
		return nil, errors.New("has a field other than clientId and clientSecret")
	case err != nil:
		return nil, errors.New("is not a JSON list of app registrations")
	case len(apps) == 0:
		return nil, errors.New("lists no app registration")
	}
	for i, a := range apps {
		if strings.TrimSpace(a.ClientID) == "" || a.ClientSecret == "" {
			return nil, fmt.Errorf("entry %d has no clientId or no clientSecret", i+1)
		}
		apps[i].ClientID = strings.TrimSpace(a.ClientID)
	}
	return apps, nil
}

func (e *envReader) duration(name string, def time.Duration) time.Duration {
	v, ok := e.value(name)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		e.fail(name, v, "a duration with its unit, such as 45s, 15m or 24h")
		return def
	}
	return d
}

// defaultConfig reads the environment; validate reports its malformed values.
// maxLanes bounds DVSYNC_WORKER_LANES: a lane is a goroutine and its share of held messages.
const maxLanes = 16384

func defaultConfig() Config {
	var e envReader
	c := Config{
		NATSURL:      env("NATS_URL", ""),
		DatabaseURL:  env("DATABASE_URL", ""),
		MappingsFile: env("DVSYNC_MAPPINGS", ""),
		HTTPListen:   env("DVSYNC_HTTP_LISTEN", "127.0.0.1:8080"), // not every interface: in a container, :8080
		LogLevel:     strings.TrimSpace(env("DVSYNC_LOG_LEVEL", "info")),
		Dataverse: DataverseConfig{URL: env("DATAVERSE_URL", ""), TenantID: env("DATAVERSE_TENANT_ID", ""),
			ClientID: env("DATAVERSE_CLIENT_ID", ""), ClientSecret: env("DATAVERSE_CLIENT_SECRET", ""),
			TokenURL: env("DATAVERSE_TOKEN_URL", ""), MaxParallel: e.integer("DATAVERSE_MAX_PARALLEL", 52),
			DuplicateDetection:  e.boolean("DATAVERSE_DUPLICATE_DETECTION", false),
			BypassCustomPlugins: e.boolean("DATAVERSE_BYPASS_CUSTOM_PLUGINS", false),
			IntegrationUser:     env("DATAVERSE_INTEGRATION_USER", ""),
			RequestTimeout:      e.duration("DATAVERSE_REQUEST_TIMEOUT", 30*time.Second),
			Clients:             e.clients(),
			BatchSize:           e.integer("DVSYNC_BATCH_SIZE", dataverse.DefaultBatchSize),
			BatchLinger:         e.duration("DVSYNC_BATCH_LINGER", dataverse.DefaultBatchLinger)},
		Topology:  natsjs.DefaultTopology(),
		Worker:    syncworker.DefaultConfig(),
		Skip:      domain.DefaultSkipPolicy,
		APITokens: env("DVSYNC_API_TOKENS", ""), APITokensFile: env("DVSYNC_API_TOKENS_FILE", ""),
		SourceURL: env("DVSYNC_SOURCE_URL", ""), SessionKey: env("DVSYNC_SESSION_KEY", ""),
		ReplayDependents: e.boolean("DVSYNC_REPLAY_DEPENDENTS", true),
	}
	c.Skip.After = e.integer("DVSYNC_SKIP_AFTER", c.Skip.After)
	c.Skip.Probe = e.duration("DVSYNC_SKIP_PROBE", c.Skip.Probe)
	c.Topology.Replicas = e.integer("DVSYNC_NATS_REPLICAS", c.Topology.Replicas)
	c.Topology.MaxAckPending = e.integer("DVSYNC_NATS_MAX_ACK_PENDING", c.Topology.MaxAckPending)
	// Each application user adds batches in flight, and a batch's records wait in lanes: the
	// default grows with the users.
	c.Worker.Lanes = e.integer("DVSYNC_WORKER_LANES", min(c.Worker.Lanes*max(1, len(c.Dataverse.Users())), maxLanes))
	c.Worker.RetryBudget = e.duration("DVSYNC_RETRY_BUDGET", c.Worker.RetryBudget)
	c.PreflightEvery = e.duration("DVSYNC_PREFLIGHT_EVERY", defaultPreflightEvery)
	c.PreflightStartTimeout = e.duration("DVSYNC_PREFLIGHT_START_TIMEOUT", preflight.DefaultStartTimeout)
	c.LocalCurrency = strings.TrimSpace(env("DVSYNC_LOCAL_CURRENCY", ""))
	c.envErrs = e.errs
	return c
}

// flags binds the settings a subcommand uses to its flag set.
func (c *Config) flags(fs *flag.FlagSet, nats, db, dataverse, worker bool) {
	fs.StringVar(&c.HTTPListen, "http-listen", c.HTTPListen, "address of /healthz, /metrics and the API (DVSYNC_HTTP_LISTEN)")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error (DVSYNC_LOG_LEVEL)")
	if nats {
		fs.StringVar(&c.NATSURL, "nats-url", c.NATSURL, "NATS server URL (NATS_URL)")
		fs.IntVar(&c.Topology.Replicas, "nats-replicas", c.Topology.Replicas, "stream replicas (DVSYNC_NATS_REPLICAS)")
	}
	if db {
		fs.StringVar(&c.DatabaseURL, "database-url", c.DatabaseURL, "PostgreSQL URL, or sqlite:<file> (DATABASE_URL); prefer the environment, it may hold a password")
	}
	if dataverse {
		fs.StringVar(&c.Dataverse.URL, "dataverse-url", c.Dataverse.URL, "Dataverse environment URL (DATAVERSE_URL)")
		fs.StringVar(&c.MappingsFile, "mappings", c.MappingsFile, "YAML file of table mappings over the defaults (DVSYNC_MAPPINGS)")
	}
	if worker {
		fs.IntVar(&c.Worker.Lanes, "lanes", c.Worker.Lanes, "records synced at once per process (DVSYNC_WORKER_LANES)")
		fs.DurationVar(&c.Worker.HandleTimeout, "handle-timeout", c.Worker.HandleTimeout, "most time one change is held, retries included")
		fs.IntVar(&c.Skip.After, "skip-after", c.Skip.After, "identical permanent failures in a row that skip a record; 0 never skips (DVSYNC_SKIP_AFTER)")
		fs.DurationVar(&c.Skip.Probe, "skip-probe", c.Skip.Probe, "how often a skipped record is tried anyway, to find its cause gone; 0 never (DVSYNC_SKIP_PROBE)")
		fs.DurationVar(&c.PreflightEvery, "preflight-every", c.PreflightEvery, "how often the setup is checked again after the check at start; 0 never again, only at start (DVSYNC_PREFLIGHT_EVERY)")
		fs.DurationVar(&c.PreflightStartTimeout, "preflight-start-timeout", c.PreflightStartTimeout, "most time the setup check at start holds up consuming (DVSYNC_PREFLIGHT_START_TIMEOUT)")
		fs.DurationVar(&c.Worker.RetryBudget, "retry-budget", c.Worker.RetryBudget, "how long a transiently failing change is retried before it is parked as an error (DVSYNC_RETRY_BUDGET)")
	}
}

// logLevel reads DVSYNC_LOG_LEVEL (--log-level): debug, info, warn or error, in any case; as
// newLogger does.
func logLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(s))); err != nil {
		return slog.LevelInfo, fmt.Errorf("log level (DVSYNC_LOG_LEVEL, --log-level) %s is not debug, info, warn or error", shown(s))
	}
	return l, nil
}

// minSessionKey is the shortest session key accepted, in bytes.
const minSessionKey = 16

// sessionKey decodes DVSYNC_SESSION_KEY; nil when it is not set (a random key per process).
// Its errors never quote the key.
func (c Config) sessionKey() ([]byte, error) {
	if c.SessionKey == "" {
		return nil, nil
	}
	key, err := hex.DecodeString(c.SessionKey)
	if err != nil {
		return nil, errors.New("DVSYNC_SESSION_KEY is not hex; make one with `openssl rand -hex 32`")
	}
	if len(key) < minSessionKey {
		return nil, fmt.Errorf("DVSYNC_SESSION_KEY has %d bytes, fewer than %d; make one with `openssl rand -hex 32`", len(key), minSessionKey)
	}
	return key, nil
}

// validate checks the settings a subcommand needs, all at once.
func (c Config) validate(nats, db, dataverse bool) error {
	errs := append([]error(nil), c.envErrs...)
	if nats && c.NATSURL == "" {
		errs = append(errs, errors.New("NATS_URL (or --nats-url) is required"))
	}
	if db && c.DatabaseURL == "" {
		errs = append(errs, errors.New("DATABASE_URL (or --database-url) is required"))
	}
	if dataverse {
		if u, err := url.Parse(c.Dataverse.URL); err != nil || u.Host == "" {
			errs = append(errs, errors.New("DATAVERSE_URL (or --dataverse-url) must be the environment's https URL"))
		}
		d := c.Dataverse
		if (d.ClientID == "") != (d.ClientSecret == "") || len(d.Users()) == 0 || (d.TenantID == "" && d.TokenURL == "") {
			errs = append(errs, errors.New("DATAVERSE_TENANT_ID, DATAVERSE_CLIENT_ID and DATAVERSE_CLIENT_SECRET are required (or DATAVERSE_CLIENTS for the client ids and secrets)"))
		}
		seen := map[string]bool{}
		for _, app := range d.Users() {
			if seen[app.ClientID] {
				errs = append(errs, fmt.Errorf("the app %s is listed twice (DATAVERSE_CLIENT_ID, DATAVERSE_CLIENTS)", shown(app.ClientID)))
			}
			seen[app.ClientID] = true
		}
	}
	if c.Dataverse.BatchSize < 0 || c.Dataverse.BatchSize > 1000 {
		errs = append(errs, fmt.Errorf("DVSYNC_BATCH_SIZE %d is not between 1 and 1000", c.Dataverse.BatchSize))
	}
	if c.Dataverse.BatchLinger > maxBatchLinger {
		errs = append(errs, fmt.Errorf("DVSYNC_BATCH_LINGER %s is longer than %s: each sync call may wait that long", c.Dataverse.BatchLinger, maxBatchLinger))
	}
	if _, err := c.sessionKey(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Topology.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Worker.Lanes < 1 || c.Worker.Lanes > maxLanes {
		errs = append(errs, fmt.Errorf("lanes (DVSYNC_WORKER_LANES, --lanes) %d is not between 1 and %d", c.Worker.Lanes, maxLanes))
	}
	if _, err := logLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	// Dataverse's isocurrencycode holds at most 5 characters: a longer code could never match.
	if n := len([]rune(c.LocalCurrency)); n > 5 {
		errs = append(errs, fmt.Errorf("DVSYNC_LOCAL_CURRENCY %s has %d characters; a currency code has at most 5", shown(c.LocalCurrency), n))
	}
	// A negative value would silently mean "the default" or "never": say so instead.
	for _, n := range []struct {
		name     string
		negative bool
	}{
		{"DATAVERSE_MAX_PARALLEL", c.Dataverse.MaxParallel < 0},
		{"DATAVERSE_REQUEST_TIMEOUT", c.Dataverse.RequestTimeout < 0},
		{"DVSYNC_BATCH_LINGER", c.Dataverse.BatchLinger < 0},
		{"DVSYNC_SKIP_AFTER (--skip-after)", c.Skip.After < 0},
		{"DVSYNC_SKIP_PROBE (--skip-probe)", c.Skip.Probe < 0},
		{"DVSYNC_RETRY_BUDGET (--retry-budget)", c.Worker.RetryBudget < 0},
		{"DVSYNC_PREFLIGHT_EVERY (--preflight-every)", c.PreflightEvery < 0},
		{"DVSYNC_PREFLIGHT_START_TIMEOUT (--preflight-start-timeout)", c.PreflightStartTimeout < 0},
	} {
		if n.negative {
			errs = append(errs, fmt.Errorf("%s is negative", n.name))
		}
	}
	// Workers send InProgress for every message they hold, so the handle timeout need not fit in
	// the ack wait; it only bounds how long one change holds a lane.
	if c.Worker.HandleTimeout < 100*time.Millisecond || c.Worker.HandleTimeout > 10*time.Minute {
		errs = append(errs, fmt.Errorf("handle timeout %s is not between 100ms and 10m", c.Worker.HandleTimeout))
	}
	return errors.Join(errs...)
}
