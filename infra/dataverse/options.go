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

// WithTokenSource authenticates every request with a bearer token from ts. When ts can
// Invalidate (as CachedTokenSource can), a 401 is retried once with a fresh token.
func WithTokenSource(ts oauth2.TokenSource) Option { return func(cl *Client) { cl.tokens = ts } }

// RequestObserver sees every finished request: method, entity set, HTTP status (0 when no answer
// came) and duration. It feeds metrics.
type RequestObserver func(method, entitySet string, status int, took time.Duration)

// WithRequestObserver calls obs after every request.
func WithRequestObserver(obs RequestObserver) Option { return func(cl *Client) { cl.observe = obs } }

// WithMaxParallel caps the requests in flight (default 52, Dataverse's concurrency limit per
// user); x-ms-dop-hint lowers it further while Dataverse sends one.
func WithMaxParallel(n int) Option {
	return func(cl *Client) {
		if n > 0 {
			cl.limit = newLimiter(n)
		}
	}
}

// WithDuplicateDetection turns on Dataverse's duplicate-detection rules for writes, which the Web
// API skips by default (MSCRM.SuppressDuplicateDetection: false).
func WithDuplicateDetection(on bool) Option {
	return func(cl *Client) {
		if on {
			cl.writeHeaders.Set("MSCRM.SuppressDuplicateDetection", "false")
		}
	}
}

// WithBypassCustomPlugins skips custom synchronous plug-ins on writes
// (MSCRM.BypassCustomPluginExecution; the user needs prvBypassCustomPlugins).
func WithBypassCustomPlugins(on bool) Option {
	return func(cl *Client) {
		if on {
			cl.writeHeaders.Set("MSCRM.BypassCustomPluginExecution", "true")
		}
	}
}

// WithThrottleListener calls f with the time the gate opens again after every 429, so that other
// processes of the same Dataverse user can hold back too.
func WithThrottleListener(f func(until time.Time)) Option {
	return func(cl *Client) { cl.onThrottle = f }
}

// WithThrottleObserver calls f with Dataverse's code of every 429 this user gets (0x80072322
// requests, 0x80072321 execution time, 0x80072326 concurrency), for metrics.
func WithThrottleObserver(f func(code string)) Option {
	return func(cl *Client) { cl.onThrottleCode = f }
}
