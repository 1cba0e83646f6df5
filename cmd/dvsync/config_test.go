package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// typedVariables are the environment's settings that are not text, each with a malformed value.
var typedVariables = map[string]string{
	"DATAVERSE_REQUEST_TIMEOUT":       "45", // seconds meant, no unit given
	"DATAVERSE_MAX_PARALLEL":          "fifty",
	"DATAVERSE_DUPLICATE_DETECTION":   "yes",
	"DATAVERSE_BYPASS_CUSTOM_PLUGINS": "on",
	"DVSYNC_SKIP_AFTER":               "2.5",
	"DVSYNC_SKIP_PROBE":               "soon",
	"DVSYNC_NATS_REPLICAS":            "three",
	"DVSYNC_WORKER_LANES":             "eight",
	"DVSYNC_RETRY_BUDGET":             "1 day",
	"DVSYNC_REPLAY_DEPENDENTS":        "nope",
	"DVSYNC_BATCH_SIZE":               "lots",
	"DVSYNC_BATCH_LINGER":             "20", // milliseconds meant
	"DVSYNC_PREFLIGHT_START_TIMEOUT":  "30", // seconds meant
}

// clearTypedVariables leaves the typed settings unset for a test, whatever the machine has.
func clearTypedVariables(t *testing.T) {
	for name := range typedVariables {
		t.Setenv(name, "")
	}
	t.Setenv("DVSYNC_LOG_LEVEL", "")
	t.Setenv("DVSYNC_SESSION_KEY", "")
	t.Setenv("DATAVERSE_CLIENTS", "")
	t.Setenv("DATAVERSE_CLIENTS_FILE", "")
	t.Setenv("DVSYNC_LOCAL_CURRENCY", "")
}

// A malformed value is a start-up error naming its variable, all of them at once, never a
// default silently taking its place.
func TestConfigMalformedEnvironmentIsAStartUpError(t *testing.T) {
	clearTypedVariables(t)
	for name, v := range typedVariables {
		t.Setenv(name, v)
	}
	t.Setenv("DVSYNC_LOG_LEVEL", "verbose")
	err := defaultConfig().validate(false, false, false)
	if err == nil {
		t.Fatal("a malformed environment validates")
	}
	for name, v := range typedVariables {
		if !strings.Contains(err.Error(), name+`="`+v+`" is not`) {
			t.Errorf("the error does not name %s=%q:\n%v", name, v, err)
		}
	}
	if !strings.Contains(err.Error(), "DVSYNC_LOG_LEVEL") {
		t.Errorf("the error does not name DVSYNC_LOG_LEVEL:\n%v", err)
	}
	if !strings.Contains(err.Error(), "45s") {
		t.Errorf("a duration without its unit is not told how to write one:\n%v", err)
	}

	// As the process sees it: a usage error (exit 2), reported with the other settings missing.
	t.Setenv("NATS_URL", "")
	var errOut bytes.Buffer
	if code := run(context.Background(), []string{"worker"}, io.Discard, &errOut); code != 2 ||
		!strings.Contains(errOut.String(), "DVSYNC_WORKER_LANES") || !strings.Contains(errOut.String(), "NATS_URL") {
		t.Fatalf("dvsync worker: exit %d: %s", code, errOut.String())
	}
}

// The errors quote no secret: the session key's says what is wrong with it, not what it is, and
// a long or unprintable value of a typed setting is escaped and cut short.
func TestConfigErrorsQuoteNoSecret(t *testing.T) {
	clearTypedVariables(t)
	t.Setenv("DVSYNC_SESSION_KEY", "zz-hunter2-not-hex")
	t.Setenv("DATAVERSE_CLIENT_SECRET", "hunter3-client-secret")
	t.Setenv("DVSYNC_WORKER_LANES", "\x1b[31m"+strings.Repeat("9x", 100))
	err := defaultConfig().validate(false, false, false)
	if err == nil || !strings.Contains(err.Error(), "DVSYNC_SESSION_KEY is not hex") || !strings.Contains(err.Error(), "DVSYNC_WORKER_LANES") {
		t.Fatalf("%v", err)
	}
	for _, secret := range []string{"hunter2", "hunter3", "\x1b", strings.Repeat("9x", 30)} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the error shows %q:\n%v", secret, err)
		}
	}
}

// Well-formed values are read; blanks around them (an env file's CR) do not matter; unset or
// blank keeps the default.
func TestConfigReadsWellFormedEnvironment(t *testing.T) {
	clearTypedVariables(t)
	c := defaultConfig()
	if err := c.validate(false, false, false); err != nil {
		t.Fatal(err)
	}
	if c.PreflightStartTimeout != 30*time.Second || c.LocalCurrency != "" {
		t.Fatalf("preflight defaults: start timeout %s, local currency %q", c.PreflightStartTimeout, c.LocalCurrency)
	}
	if c.Dataverse.RequestTimeout != 30*time.Second || c.Worker.Lanes != 1024 || !c.ReplayDependents || c.Dataverse.DuplicateDetection {
		t.Fatalf("defaults: timeout %s, lanes %d, replay dependents %v, duplicate detection %v",
			c.Dataverse.RequestTimeout, c.Worker.Lanes, c.ReplayDependents, c.Dataverse.DuplicateDetection)
	}
	t.Setenv("DATAVERSE_REQUEST_TIMEOUT", "45s\r")
	t.Setenv("DVSYNC_WORKER_LANES", " 12 ")
	t.Setenv("DVSYNC_SKIP_AFTER", "0")
	t.Setenv("DVSYNC_SKIP_PROBE", "1h")
	t.Setenv("DATAVERSE_DUPLICATE_DETECTION", "TRUE")
	t.Setenv("DVSYNC_REPLAY_DEPENDENTS", "0") // was read as on: only "false" turned it off
	t.Setenv("DVSYNC_LOG_LEVEL", " Warn\r")
	t.Setenv("DVSYNC_PREFLIGHT_START_TIMEOUT", "5s")
	t.Setenv("DVSYNC_LOCAL_CURRENCY", " EUR\r")
	c = defaultConfig()
	if err := c.validate(false, false, false); err != nil {
		t.Fatal(err)
	}
	if c.PreflightStartTimeout != 5*time.Second || c.LocalCurrency != "EUR" {
		t.Errorf("preflight: start timeout %s, local currency %q", c.PreflightStartTimeout, c.LocalCurrency)
	}
	t.Setenv("DVSYNC_LOCAL_CURRENCY", "EURO-X")
	if err := defaultConfig().validate(false, false, false); err == nil || !strings.Contains(err.Error(), "DVSYNC_LOCAL_CURRENCY") {
		t.Errorf("a currency code of 6 characters: %v", err)
	}
	t.Setenv("DVSYNC_LOCAL_CURRENCY", "EUR")
	if l, err := logLevel(c.LogLevel); err != nil || l != slog.LevelWarn {
		t.Errorf("log level %q: %v %v", c.LogLevel, l, err)
	}
	if c.Dataverse.RequestTimeout != 45*time.Second || c.Worker.Lanes != 12 || c.Skip.After != 0 || c.Skip.Probe != time.Hour ||
		!c.Dataverse.DuplicateDetection || c.ReplayDependents {
		// Not the whole Config: it holds secrets.
		t.Fatalf("read: timeout %s, lanes %d, skip after %d, probe %s, duplicate detection %v, replay dependents %v",
			c.Dataverse.RequestTimeout, c.Worker.Lanes, c.Skip.After, c.Skip.Probe, c.Dataverse.DuplicateDetection, c.ReplayDependents)
	}
}

// A negative count or duration, from the environment or a flag, would silently mean the default
// or "never": it is refused.
func TestConfigRefusesNegativeSettings(t *testing.T) {
	clearTypedVariables(t)
	t.Setenv("DATAVERSE_REQUEST_TIMEOUT", "-5s")
	t.Setenv("DVSYNC_RETRY_BUDGET", "-1h")
	t.Setenv("DATAVERSE_MAX_PARALLEL", "-1")
	_, err := readConfig("worker", []string{"--skip-after", "-1", "--skip-probe", "-1m", "--preflight-start-timeout", "-1s"}, io.Discard, false, false, false, true, nil)
	if err == nil {
		t.Fatal("negative settings are accepted")
	}
	for _, want := range []string{"DATAVERSE_REQUEST_TIMEOUT is negative", "DVSYNC_RETRY_BUDGET (--retry-budget) is negative",
		"DATAVERSE_MAX_PARALLEL is negative", "DVSYNC_SKIP_AFTER (--skip-after) is negative", "DVSYNC_SKIP_PROBE (--skip-probe) is negative",
		"DVSYNC_PREFLIGHT_START_TIMEOUT (--preflight-start-timeout) is negative"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q:\n%v", want, err)
		}
	}
}

// DATAVERSE_CLIENTS (or the file DATAVERSE_CLIENTS_FILE names) lists app registrations besides or
// instead of DATAVERSE_CLIENT_ID; a malformed list is a start-up error that quotes no secret.
func TestConfigDataverseClients(t *testing.T) {
	clearTypedVariables(t)
	t.Setenv("DATAVERSE_URL", "https://contoso.crm4.dynamics.com")
	t.Setenv("DATAVERSE_TENANT_ID", "tenant")
	t.Setenv("DATAVERSE_CLIENT_ID", "")
	t.Setenv("DATAVERSE_CLIENT_SECRET", "")
	t.Setenv("DATAVERSE_CLIENTS", ` [{"clientId":"app-1","clientSecret":"s3cret-1"}, {"clientId":" app-2 ","clientSecret":"s3cret-2"}] `)
	c := defaultConfig()
	if err := c.validate(false, false, true); err != nil {
		t.Fatalf("DATAVERSE_CLIENTS instead of DATAVERSE_CLIENT_ID: %v", err)
	}
	if users := c.Dataverse.Users(); len(users) != 2 || users[0].ClientID != "app-1" || users[1].ClientID != "app-2" || users[1].ClientSecret != "s3cret-2" {
		t.Fatalf("users %v", users)
	}
	if shown := fmt.Sprintf("%v %+v %#v", c.Dataverse.Clients, c.Dataverse.Clients, c.Dataverse.Clients); strings.Contains(shown, "s3cret") {
		t.Errorf("printing the clients shows a secret: %s", shown)
	}

	// Besides DATAVERSE_CLIENT_ID, from a file; the same app twice is refused.
	t.Setenv("DATAVERSE_CLIENT_ID", "app-0")
	t.Setenv("DATAVERSE_CLIENT_SECRET", "s3cret-0")
	file := filepath.Join(t.TempDir(), "clients.json")
	if err := os.WriteFile(file, []byte(`[{"clientId":"app-3","clientSecret":"s3cret-3"}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DATAVERSE_CLIENTS", "")
	t.Setenv("DATAVERSE_CLIENTS_FILE", file)
	c = defaultConfig()
	if users := c.Dataverse.Users(); c.validate(false, false, true) != nil || len(users) != 2 || users[0].ClientID != "app-0" || users[1].ClientID != "app-3" {
		t.Fatalf("users %v: %v", users, c.validate(false, false, true))
	}
	if err := os.WriteFile(file, []byte(`[{"clientId":"app-0","clientSecret":"s3cret-9"}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := defaultConfig().validate(false, false, true); err == nil || !strings.Contains(err.Error(), `"app-0" is listed twice`) {
		t.Errorf("the same app twice: %v", err)
	}

	for _, tc := range []struct{ name, inline, file, want string }{
		{"not JSON", `[{"clientId":"a","clientSecret":s3cret-x}]`, "", "DATAVERSE_CLIENTS is not JSON (at byte"},
		{"not a list", `{"clientId":"a","clientSecret":"s3cret-x"}`, "", "DATAVERSE_CLIENTS is not a list"},
		{"a secret that is no string", `[{"clientId":"a","clientSecret":12345}]`, "", "is not a list of objects of strings"},
		{"a misspelt field", `[{"clientId":"a","client_secret":"s3cret-x"}]`, "", "has a field other than clientId and clientSecret"},
		{"no secret", `[{"clientId":"a"}]`, "", "entry 1 has no clientId or no clientSecret"},
		{"an empty list", `[]`, "", "lists no app registration"},
		{"more after the list", `[{"clientId":"a","clientSecret":"s3cret-x"}] [{"clientId":"b","clientSecret":"s3cret-y"}]`, "", "is not a JSON list"},
		{"both", `[{"clientId":"a","clientSecret":"s3cret-x"}]`, file, "DATAVERSE_CLIENTS and DATAVERSE_CLIENTS_FILE are both set"},
		{"a missing file", "", file + ".missing", "DATAVERSE_CLIENTS_FILE: open"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("DATAVERSE_CLIENTS", tc.inline)
			t.Setenv("DATAVERSE_CLIENTS_FILE", tc.file)
			err := defaultConfig().validate(false, false, false)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("the error quotes a secret: %v", err)
			}
		})
	}
}

func TestConfigBatchSettings(t *testing.T) {
	clearTypedVariables(t)
	c := defaultConfig()
	if c.Dataverse.BatchSize != 100 || c.Dataverse.BatchLinger != 20*time.Millisecond {
		t.Fatalf("defaults: size %d, linger %s", c.Dataverse.BatchSize, c.Dataverse.BatchLinger)
	}
	t.Setenv("DVSYNC_BATCH_SIZE", "250")
	t.Setenv("DVSYNC_BATCH_LINGER", "0s")
	if c = defaultConfig(); c.validate(false, false, false) != nil || c.Dataverse.BatchSize != 250 || c.Dataverse.BatchLinger != 0 {
		t.Fatalf("read: size %d, linger %s", c.Dataverse.BatchSize, c.Dataverse.BatchLinger)
	}
	t.Setenv("DVSYNC_BATCH_SIZE", "1001")
	t.Setenv("DVSYNC_BATCH_LINGER", "2s")
	err := defaultConfig().validate(false, false, false)
	if err == nil || !strings.Contains(err.Error(), "DVSYNC_BATCH_SIZE 1001 is not between 1 and 1000") || !strings.Contains(err.Error(), "DVSYNC_BATCH_LINGER 2s is longer than 1s") {
		t.Fatalf("out of range: %v", err)
	}
}
