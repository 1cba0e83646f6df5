package dataverse

import (
	"context"
	"net/url"
	"strings"
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
// asking for the "<environment>/.default" scope with the client-credentials grant.
func (c ClientCredentials) TokenSource(ctx context.Context, environmentURL string) oauth2.TokenSource {
	tokenURL := c.TokenURL
	if tokenURL == "" {
		tokenURL = "https://login.microsoftonline.com/" + url.PathEscape(c.TenantID) + "/oauth2/v2.0/token"
	}
	cfg := clientcredentials.Config{
		ClientID:     c.ClientID,
		ClientSecret: c.ClientSecret,
		TokenURL:     tokenURL,
		Scopes:       []string{strings.TrimRight(environmentURL, "/") + "/.default"},
		AuthStyle:    oauth2.AuthStyleInParams,
	}
	return oauth2.ReuseTokenSourceWithExpiry(nil, cfg.TokenSource(ctx), refreshEarly)
}
