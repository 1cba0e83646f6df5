package main

// The naive baseline: what a pipe written in an afternoon does. It pulls one message, maps the
// customer's fields with the default mapping (no lookups, no couplings, no error handling but
// waiting out a 429), PATCHes it to the emulator as an upsert by an id derived from the key, and
// acks; one message at a time.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/emulator"
	"github.com/dvsync/dvsync/infra/events"
	"github.com/dvsync/dvsync/internal/testbed"
)

type naive struct {
	client    *http.Client
	api       string
	mapping   domain.Mapping
	throttled atomic.Int64
	took      atomic.Int64 // nanoseconds spent waiting for the emulator's answers
}

func newNaive(ctx context.Context, emu *testbed.Emulator) *naive {
	cc := clientcredentials.Config{ClientID: emulator.DefaultApp.ClientID, ClientSecret: emulator.DefaultApp.ClientSecret,
		TokenURL: emu.URL + "/" + emulator.DefaultTenant + "/oauth2/v2.0/token", Scopes: []string{emu.URL + "/.default"},
		AuthStyle: oauth2.AuthStyleInParams}
	m, _ := domain.DefaultMappings().For("customer")
	return &naive{client: cc.Client(ctx), api: emu.URL + "/api/data/v9.2/", mapping: m}
}

// run handles messages until ctx ends.
func (n *naive) run(ctx context.Context, cons jetstream.Consumer) error {
	for {
		msg, err := cons.Next(jetstream.FetchContext(ctx))
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, context.DeadlineExceeded) {
				continue
			}
			return err
		}
		if err := n.handle(ctx, msg); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		_ = msg.Ack()
	}
}

func (n *naive) handle(ctx context.Context, msg jetstream.Msg) error {
	ev, f := events.Decode(msg.Subject(), msg.Headers(), msg.Data())
	if f != nil || ev.Table != "customer" {
		return nil // not the naive pipe's business
	}
	attrs, err := n.mapping.Attributes(ev.Fields)
	if err != nil {
		return err
	}
	body, err := json.Marshal(attrs)
	if err != nil {
		return err
	}
	id := uuid.NewSHA1(uuid.NameSpaceURL, []byte("dvsync-bench/customer/"+ev.Key))
	url := fmt.Sprintf("%s%s(%s)", n.api, n.mapping.EntitySet, id)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodPatch, url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		sent := time.Now()
		resp, err := n.client.Do(req)
		if err != nil {
			return err
		}
		answer, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		n.took.Add(int64(time.Since(sent)))
		switch {
		case resp.StatusCode/100 == 2:
			return nil
		case resp.StatusCode == http.StatusTooManyRequests:
			n.throttled.Add(1)
			wait, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
			if err := testbed.Sleep(ctx, time.Duration(max(wait, 1))*time.Second); err != nil {
				return err
			}
		default:
			return fmt.Errorf("naive pipe: PATCH %s: %s: %s", url, resp.Status, answer)
		}
	}
}
