package dataverse

import (
	"context"
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
}

// refreshEarly renews a token this long before it expires, so that no request carries a token
// that expires on the way (Entra ID tokens live 60 to 90 minutes).
const refreshEarly = 5 * time.Minute

// TokenSource returns a cached token source for the Dataverse environment at environmentURL,
// asking for the "<environment>/.default" scope with the client-credentials grant (x/oauth2 does
// the grant).
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
	return &CachedTokenSource{fetch: func() (*oauth2.Token, error) { return cfg.Token(ctx) }}
}

// CachedTokenSource keeps one token until shortly before it expires. Unlike oauth2's reuse
// source it can be told to drop its token, which the client does when Dataverse answers 401.
type CachedTokenSource struct {
	fetch func() (*oauth2.Token, error)
	mu    sync.Mutex
	tok   *oauth2.Token
}

// Token returns the cached token, or a new one when it is missing or about to expire.
func (s *CachedTokenSource) Token() (*oauth2.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tok != nil && (s.tok.Expiry.IsZero() || time.Until(s.tok.Expiry) > refreshEarly) {
		return s.tok, nil
	}
	tok, err := s.fetch()
	if err != nil {
		return nil, err
	}
	s.tok = tok
	return tok, nil
}

// Invalidate drops the cached token; the next Token call fetches a new one.
func (s *CachedTokenSource) Invalidate() {
	s.mu.Lock()
	s.tok = nil
	s.mu.Unlock()
}
