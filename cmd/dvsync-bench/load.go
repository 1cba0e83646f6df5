package main

// The load: customer upserts of about 630 bytes, as Business Central publishes them, built as the
// fault suite builds its events (testbed.NewChange).

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dvsync/dvsync/internal/testbed"
)

const (
	source = "bench://dvsync-bench"
	// currency is coupled before every dvsync run: each customer's lookup names it.
	currency = "EUR"
	// publishWindow is how many publishes are in flight at once while a backlog is published.
	publishWindow = 512
)

// customerFields are a customer's whole state, with every field the default mapping writes.
func customerFields(key string, version int) map[string]any {
	return map[string]any{
		"number":       key,
		"displayName":  fmt.Sprintf("Adatum Corporation %s v%d", key, version),
		"currencyCode": currency,
		"addressLine1": "192 Market Square",
		"addressLine2": "Building 7",
		"city":         "Atlanta",
		"state":        "GA",
		"postalCode":   "31772",
		"country":      "US",
		"phoneNumber":  "+1 425 555 0100",
		"email":        "robert.townes@contoso.com",
		"website":      "https://www.adatum.example.com",
		"creditLimit":  float64(12500 + version),
	}
}

// CustomerChange is event i of a backlog that cycles through customers: version i/customers+1 of
// customer i%customers, so that a record's next version comes a whole round of customers later.
func CustomerChange(run string, i, customers int) testbed.Change {
	key := fmt.Sprintf("C%06d", i%customers)
	version := i/customers + 1
	return testbed.NewChange(source, "customer", fmt.Sprintf("%s-%s-v%d", run, key, version), key, int64(version), customerFields(key, version))
}

// LatencyChange is event i of the latency scenario: every event a customer of its own, so that
// its coupling's last sync time is that event's.
func LatencyChange(run string, i int) testbed.Change {
	key := fmt.Sprintf("L%06d", i)
	return testbed.NewChange(source, "customer", fmt.Sprintf("%s-%s-v1", run, key), key, 1, customerFields(key, 1))
}

// CurrencyChange couples a currency.
func CurrencyChange(run, code string) testbed.Change {
	return testbed.NewChange(source, "currency", fmt.Sprintf("%s-currency-%s", run, code), code, 1,
		map[string]any{"code": code, "displayName": "Currency " + code})
}

// publishBacklog publishes events [from, from+n) of a cycling backlog as fast as JetStream takes
// them, a window at a time; a publish the window lost is sent again until acknowledged (its
// message id deduplicates it).
func publishBacklog(ctx context.Context, js jetstream.JetStream, run string, from, n, customers int) error {
	for lo := from; lo < from+n; lo += publishWindow {
		hi := min(lo+publishWindow, from+n)
		changes := make([]testbed.Change, 0, hi-lo)
		futures := make([]jetstream.PubAckFuture, 0, hi-lo)
		for i := lo; i < hi; i++ {
			c := CustomerChange(run, i, customers)
			f, err := js.PublishMsgAsync(&nats.Msg{Subject: c.Subject, Data: c.Data}, jetstream.WithMsgID(c.MsgID))
			if err != nil {
				f = nil // sent again below
			}
			changes, futures = append(changes, c), append(futures, f)
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(30 * time.Second): // the rest is sent again below
		}
		for j, f := range futures {
			if f != nil {
				select {
				case <-f.Ok():
					continue
				default:
				}
			}
			c := changes[j]
			if _, err := testbed.Publish(ctx, js, c.Subject, c.MsgID, c.Data, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// topUp keeps at least low messages waiting on cons while a sustained run lasts, publishing the
// cycling backlog on from next, a round of customers at a time: a publisher faster than any
// drain, so the run measures the drain. It returns when ctx ends.
func topUp(ctx context.Context, js jetstream.JetStream, cons jetstream.Consumer, run string, next, customers int) error {
	low := customers / 2
	for {
		info, err := cons.Info(ctx)
		if err == nil && info.NumPending < uint64(low) {
			if err := publishBacklog(ctx, js, run, next, customers, customers); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			next += customers
		}
		if err := testbed.Sleep(ctx, 250*time.Millisecond); err != nil {
			return nil
		}
	}
}
