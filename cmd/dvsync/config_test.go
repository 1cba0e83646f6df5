package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
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
}

// clearTypedVariables leaves the typed settings unset for a test, whatever the machine has.
func clearTypedVariables(t *testing.T) {
	for name := range typedVariables {
		t.Setenv(name, "")
	}
	t.Setenv("DVSYNC_LOG_LEVEL", "")
	t.Setenv("DVSYNC_SESSION_KEY", "")
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
	c = defaultConfig()
	if err := c.validate(false, false, false); err != nil {
		t.Fatal(err)
	}
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
	_, err := readConfig("worker", []string{"--skip-after", "-1", "--skip-probe", "-1m"}, io.Discard, false, false, false, true, nil)
	if err == nil {
		t.Fatal("negative settings are accepted")
	}
	for _, want := range []string{"DATAVERSE_REQUEST_TIMEOUT is negative", "DVSYNC_RETRY_BUDGET (--retry-budget) is negative",
		"DATAVERSE_MAX_PARALLEL is negative", "DVSYNC_SKIP_AFTER (--skip-after) is negative", "DVSYNC_SKIP_PROBE (--skip-probe) is negative"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q:\n%v", want, err)
		}
	}
}
