package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/dvsync/dvsync/consumers/replay"
	"github.com/dvsync/dvsync/infra/httpapi"
)

// checks are the dependencies /healthz reports on (liveness).
func (s *stack) checks() map[string]httpapi.Check {
	c := map[string]httpapi.Check{}
	if s.nc != nil {
		c["nats"] = func(context.Context) error {
			if !s.nc.IsConnected() {
				return errors.New("not connected")
			}
			return nil
		}
	}
	if s.store != nil {
		c[s.storeKind] = s.store.Ping
	}
	return c
}

// readiness are the checks /readyz asks: whether the process can take work now. Besides those of
// /healthz: JetStream answers (a server that lost its cluster's quorum still takes connections)
// and the process is not stopping. The streams and the consumer are set up before the process
// listens at all (connectNATS), and serve's API before it serves.
func (s *stack) readiness(ctx context.Context) map[string]httpapi.Check {
	c := s.checks()
	if s.js != nil {
		c["jetstream"] = func(ctx context.Context) error {
			_, err := s.js.AccountInfo(ctx)
			return err
		}
	}
	c["running"] = func(context.Context) error {
		if ctx.Err() != nil {
			return errors.New("stopping")
		}
		return nil
	}
	return c
}

// serveHTTP serves /healthz, /readyz, /metrics and, given tokens, the errors API on ln until ctx
// ends.
func (s *stack) serveHTTP(ctx context.Context, ln net.Listener, tokens *httpapi.Tokens) error {
	api := &httpapi.Server{Metrics: s.metrics, Checks: s.checks(), Ready: s.readiness(ctx), Log: s.log.With("component", "api")}
	if tokens != nil && s.store != nil && s.js != nil {
		s.watchLedger()
		api.Ledger, api.Tokens, api.Couplings = s.store, tokens, s.store
		api.Links = httpapi.Links{DataverseURL: s.cfg.Dataverse.URL, SourceURL: s.cfg.SourceURL}
		api.Sources = s.sourceView()
		// validate has refused a key that is not hex or too short.
		api.SessionKey, _ = s.cfg.sessionKey()
		replayer := &replay.Replayer{Store: s.store, JS: s.js, Log: s.log.With("component", "replay"), Metrics: s.metrics}
		api.Replay = replayer
		var runs sync.WaitGroup
		defer runs.Wait() // the coupling runs started in the background end with ctx
		api.CoupleRun = recordedRuns{couplingRunner: couplingRunner{replayer: replayer, ledger: s.store}, store: s.store,
			beat: coupleRunBeat, base: ctx, wg: &runs}
		actions, err := s.couplingActions(replayer)
		if err != nil {
			return err
		}
		api.Coupling = actions
		view := &streamView{js: s.js, tables: actions.Mappings.Tables(), ttl: streamViewTTL}
		api.Pauses = tablePauses{store: s.store, js: s.js, nc: s.nc, mappings: actions.Mappings, view: view}
		api.Lag = view.lag
	}
	return serve(ctx, ln, api.Handler())
}

// loadTokens reads the API tokens from the configuration.
func (c Config) loadTokens() (*httpapi.Tokens, error) {
	spec := c.APITokens
	if c.APITokensFile != "" {
		data, err := os.ReadFile(c.APITokensFile)
		if err != nil {
			return nil, fmt.Errorf("api tokens: %w", err)
		}
		spec += "\n" + string(data)
	}
	return httpapi.ParseTokens(spec)
}

// httpTimeouts bound what one client may hold of a server: a slow or idle client is cut off.
// Write covers the longest answer, a replay of 1000 errors or a page of 1000 of them.
var httpTimeouts = struct{ ReadHeader, Read, Write, Idle time.Duration }{
	ReadHeader: 10 * time.Second, Read: 30 * time.Second, Write: 2 * time.Minute, Idle: 2 * time.Minute,
}

// maxHeaderBytes bounds a request's headers.
const maxHeaderBytes = 64 << 10

// serve runs an HTTP server on ln until ctx ends, then shuts it down gracefully.
func serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: httpTimeouts.ReadHeader, ReadTimeout: httpTimeouts.Read,
		WriteTimeout: httpTimeouts.Write, IdleTimeout: httpTimeouts.Idle, MaxHeaderBytes: maxHeaderBytes}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := srv.Shutdown(shutdown)
		<-errc
		return err
	}
}
