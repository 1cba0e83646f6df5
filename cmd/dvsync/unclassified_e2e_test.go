package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dvsync/dvsync/domain"
)

// An error no classifier rule knows reaches the administrator as setup/unknown with Dataverse's
// words, and is counted by table, so that operators see a rule is missing. Dataverse is the
// emulator behind a proxy that answers one record's write with an error nobody has posted.
func TestAnUnclassifiedErrorIsReportedAndCounted(t *testing.T) {
	const marker = "UNHEARD-OF"
	const unheard = `{"error":{"code":"0x8004ffee","message":"The frobnicator declined the request."}}`
	h := startWith(t, options{workers: 1, tweak: func(c *Config) {
		target, err := url.Parse(c.Dataverse.URL)
		if err != nil {
			t.Fatal(err)
		}
		proxy := httputil.NewSingleHostReverseProxy(target)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			if r.Method != http.MethodGet && strings.Contains(string(body), marker) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusBadRequest)
				_, _ = io.WriteString(w, unheard)
				return
			}
			proxy.ServeHTTP(w, r)
		}))
		t.Cleanup(srv.Close)
		c.Dataverse.URL, c.Dataverse.BatchSize = srv.URL, 1
	}})
	counter := h.workers[0].metrics.Unclassified.WithLabelValues("customer")
	before := testutil.ToFloat64(counter)

	known := h.key("KNOWN")
	h.publish("customer", known, 1, map[string]any{"number": known, "displayName": known})
	h.waitCoupled("customer", known, 1)
	key := h.key("UNHEARD")
	h.publish("customer", key, 1, map[string]any{"number": key, "displayName": marker})
	e := h.waitError("customer", key, domain.KindUnknown)
	if e.Class != domain.ClassSetup || !strings.Contains(e.Message, "The frobnicator declined the request.") ||
		!strings.Contains(e.Message, "could not tell") {
		t.Fatalf("reported as %s/%s: %q", e.Class, e.Kind, e.Message)
	}
	h.eventually("the unclassified error to be counted", func() bool { return testutil.ToFloat64(counter) == before+1 })
}
