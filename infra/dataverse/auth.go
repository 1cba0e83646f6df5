package dataverse

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// ClientCredentials are a Microsoft Entra ID app registration's client credentials.
type ClientCredentials struct {
	// TokenURL defaults to https://login.microsoftonline.com/<TenantID>/oauth2/v2.0/token.
	TokenURL     string
	TenantID     string
	ClientID     string
	ClientSecret string
	// Timeout bounds one token request (default 30s): a token endpoint that accepts the
	// connection and never answers must not hold up the sync.
	Timeout time.Duration
	// OnFailure, when set, is told of every token request that failed (once per request, however
	// many callers waited for it), with its reason: TokenRefused or TokenUnavailable.
	OnFailure func(reason string)
}

// Why a token request failed, as OnFailure is told.
const (
	// TokenRefused: Entra ID answered and refused (a wrong or expired secret, a disabled app).
	TokenRefused = "refused"
	// TokenUnavailable: no answer, a timeout or a server error; retried.
	TokenUnavailable = "unavailable"
)

// TokenFailureReason sorts a failed token request as OnFailure is told it.
func TokenFailureReason(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && (re.Response == nil || re.Response.StatusCode < 500) {
		return TokenRefused
	}
	return TokenUnavailable
}

// refreshEarly renews a token this long before it expires, so that no request carries a token
// that expires on the way (Entra ID tokens live 60 to 90 minutes).
const refreshEarly = 5 * time.Minute

const defaultTokenTimeout = 30 * time.Second

// TokenSource returns a cached token source for the Dataverse environment at environmentURL,
// asking for the "<environment>/.default" scope with the client-credentials grant (x/oauth2 does
// the grant). ctx bounds the life of the source, not of one request.
func (c ClientCredentials) TokenSource(ctx context.Context, environmentURL string) *CachedTokenSource {
	tokenURL := c.TokenURL
	if tokenURL == "" {
		tokenURL = "https://login.microsoftonline.com/" + url.PathEscape(c.TenantID) + "/oauth2/v2.0/token"
	}
	cfg := &clientcredentials.Config{
		ClientID:     c.ClientID,
		ClientSecret: c.ClientSecret,
		TokenURL:     tokenURL,
		Scopes:       []string{strings.TrimRight(environmentURL, "/") + "/.default"},
		AuthStyle:    oauth2.AuthStyleInParams,
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = defaultTokenTimeout
	}
	// x/oauth2 takes its HTTP client from the context; the default one has no timeout at all.
	ctx = context.WithValue(ctx, oauth2.HTTPClient, &http.Client{Timeout: timeout})
	return &CachedTokenSource{base: ctx, timeout: timeout, onFailure: c.OnFailure,
		fetch: func(ctx context.Context) (*oauth2.Token, error) { return cfg.Token(ctx) }}
}

// CachedTokenSource keeps one token until shortly before it expires. Unlike oauth2's reuse
// source it can be told to drop its token, which the client does when Dataverse answers 401, and
// a caller waits for a token only as long as its own context allows: one fetch runs at a time,
// bounded by its timeout, and holds no lock while it runs.
type CachedTokenSource struct {
	base      context.Context
	timeout   time.Duration
	fetch     func(context.Context) (*oauth2.Token, error)
	onFailure func(reason string)

	mu      sync.Mutex
	tok     *oauth2.Token
	pending *tokenFetch
}

// tokenFetch is one token request that every waiting caller shares.
type tokenFetch struct {
	done chan struct{}
	tok  *oauth2.Token
	err  error
}

// Token returns the cached token, or a new one when it is missing or about to expire.
func (s *CachedTokenSource) Token() (*oauth2.Token, error) {
	return s.TokenContext(context.Background())
}

// TokenContext is Token that gives up when ctx ends; the fetch goes on for the other callers.
// A token in its last minutes is still handed out while its successor is fetched, so that a slow
// or failing token endpoint holds nobody up before it must.
func (s *CachedTokenSource) TokenContext(ctx context.Context) (*oauth2.Token, error) {
	s.mu.Lock()
	tok := s.tok
	fresh := tok != nil && (tok.Expiry.IsZero() || time.Until(tok.Expiry) > refreshEarly)
	usable := tok != nil && (tok.Expiry.IsZero() || time.Until(tok.Expiry) > time.Minute)
	if fresh {
		s.mu.Unlock()
		return tok, nil
	}
	f := s.pending
	if f == nil {
		f = &tokenFetch{done: make(chan struct{})}
		s.pending = f
		go s.run(f)
	}
	s.mu.Unlock()
	if usable {
		return tok, nil
	}
	select {
	case <-f.done:
		return f.tok, f.err
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for a token: %w", ctx.Err())
	}
}

func (s *CachedTokenSource) run(f *tokenFetch) {
	ctx, cancel := context.WithTimeout(s.base, s.timeout)
	defer cancel()
	f.tok, f.err = s.fetch(ctx)
	if f.err != nil && s.onFailure != nil {
		s.onFailure(TokenFailureReason(f.err))
	}
	s.mu.Lock()
	if f.err == nil {
		s.tok = f.tok
	}
	s.pending = nil
	s.mu.Unlock()
	close(f.done)
}

// Invalidate drops the cached token; the next Token call fetches a new one.
func (s *CachedTokenSource) Invalidate() {
	s.mu.Lock()
	s.tok = nil
	s.mu.Unlock()
}
