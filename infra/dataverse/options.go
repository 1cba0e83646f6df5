// Package dataverse is a client of the Microsoft Dataverse Web API (OData v4 JSON under
// /api/data/v9.2/). It implements domain.Dataverse and returns every error response as a
// *domain.DataverseError (wrapped), and every request that got no answer wrapped with
// domain.ErrDataverseUnreachable.
package dataverse

import (
	"net/http"
	"time"

	"golang.org/x/oauth2"
)

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sets the HTTP client (its Timeout bounds each request).
func WithHTTPClient(c *http.Client) Option { return func(cl *Client) { cl.http = c } }

// WithTokenSource authenticates every request with a bearer token from ts.
func WithTokenSource(ts oauth2.TokenSource) Option { return func(cl *Client) { cl.tokens = ts } }

// RequestObserver sees every finished request: method, entity set, HTTP status (0 when no answer
// came) and duration. It feeds metrics.
type RequestObserver func(method, entitySet string, status int, took time.Duration)

// WithRequestObserver calls obs after every request.
func WithRequestObserver(obs RequestObserver) Option { return func(cl *Client) { cl.observe = obs } }
