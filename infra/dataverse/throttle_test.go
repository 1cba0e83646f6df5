package dataverse_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/dataverse"
	"github.com/dvsync/dvsync/infra/emulator"
)

// counted serves the emulator and counts token and API requests.
type counted struct {
	emu            *emulator.Emulator
	tokens, apiReq atomic.Int64
	headers        atomic.Value // http.Header of the last API request
}

func (c *counted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && len(r.URL.Path) > 6 && r.URL.Path[len(r.URL.Path)-6:] == "/token" {
		c.tokens.Add(1)
	} else {
		c.apiReq.Add(1)
		c.headers.Store(r.Header.Clone())
	}
	c.emu.Handler().ServeHTTP(w, r)
}

func countedClient(t *testing.T, opts ...dataverse.Option) (*dataverse.Client, *counted) {
	t.Helper()
	h := &counted{emu: emulator.New()}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	creds := dataverse.ClientCredentials{TokenURL: srv.URL + "/" + emulator.DefaultTenant + "/oauth2/v2.0/token",
		ClientID: emulator.DefaultApp.ClientID, ClientSecret: emulator.DefaultApp.ClientSecret}
	c, err := dataverse.NewClient(srv.URL, append([]dataverse.Option{dataverse.WithTokenSource(creds.TokenSource(context.Background(), srv.URL))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c, h
}

func TestA401IsRetriedOnceWithAFreshToken(t *testing.T) {
	c, h := countedClient(t)
	ctx := context.Background()
	if _, err := c.Query(ctx, "accounts", nil); err != nil {
		t.Fatal(err)
	}
	h.emu.RevokeTokens()
	if _, err := c.Query(ctx, "accounts", nil); err != nil {
		t.Fatalf("after the token was revoked: %v", err)
	}
	if h.tokens.Load() != 2 || h.apiReq.Load() != 3 {
		t.Fatalf("%d token and %d API requests; want 2 and 3 (one 401 retried)", h.tokens.Load(), h.apiReq.Load())
	}
}

func TestRetryAfterHoldsBackEveryCaller(t *testing.T) {
	c, h := countedClient(t)
	h.emu.SetLimits(emulator.Limits{Requests: 1, Window: 2 * time.Second})
	ctx := context.Background()
	if _, err := c.Query(ctx, "accounts", nil); err != nil {
		t.Fatal(err)
	}
	_, err := c.Query(ctx, "accounts", nil)
	var dv *domain.DataverseError
	if !errors.As(err, &dv) || dv.Status != 429 || dv.Code != "0x80072322" || dv.RetryAfter <= 0 {
		t.Fatalf("second call: %v", err)
	}
	sent := h.apiReq.Load()
	// Another caller with too little time left is refused locally, without a request.
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	_, err = c.Query(short, "accounts", nil)
	if f := domain.ClassifyDataverse(err); f == nil || f.Kind != domain.KindThrottled || f.RetryAfter <= 0 || h.apiReq.Load() != sent {
		t.Fatalf("a caller during the wait: %v (%+v); %d requests sent, want %d", err, f, h.apiReq.Load(), sent)
	}
	// A caller with time waits out Retry-After and then succeeds.
	if _, err := c.Query(ctx, "accounts", nil); err != nil {
		t.Fatalf("after the wait: %v", err)
	}
}

func TestParallelismFollowsTheDOPHint(t *testing.T) {
	c, h := countedClient(t, dataverse.WithMaxParallel(16))
	if c.MaxParallel() != 16 {
		t.Fatalf("cap %d before any answer, want 16", c.MaxParallel())
	}
	h.emu.SetLimits(emulator.Limits{DOPHint: 3})
	if _, err := c.Query(context.Background(), "accounts", nil); err != nil {
		t.Fatal(err)
	}
	if c.MaxParallel() != 3 {
		t.Fatalf("cap %d after x-ms-dop-hint: 3", c.MaxParallel())
	}
}

func TestOptionalHeadersOnWrites(t *testing.T) {
	c, h := countedClient(t, dataverse.WithDuplicateDetection(true), dataverse.WithBypassCustomPlugins(true))
	if _, err := c.Create(context.Background(), "accounts", domain.Attributes{"name": "x"}); err != nil {
		t.Fatal(err)
	}
	hdr := h.headers.Load().(http.Header)
	if hdr.Get("MSCRM.SuppressDuplicateDetection") != "false" || hdr.Get("MSCRM.BypassCustomPluginExecution") != "true" {
		t.Fatalf("write headers = %v", hdr)
	}
	if _, err := c.Query(context.Background(), "accounts", nil); err != nil {
		t.Fatal(err)
	}
	if hdr := h.headers.Load().(http.Header); hdr.Get("MSCRM.SuppressDuplicateDetection") != "" {
		t.Fatal("a read carried write headers")
	}
}
