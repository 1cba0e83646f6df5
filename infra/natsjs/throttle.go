package natsjs

import (
	"encoding/json"
	"fmt"
	"regexp"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
)

// ThrottleSubject is where workers of one Dataverse user (one app registration) tell each other
// about service-protection throttling: Dataverse counts its limits per user, so a 429 for one
// worker means every worker of that user should wait.
func ThrottleSubject(user string) string {
	return "dvsync.throttle." + regexp.MustCompile(`[^A-Za-z0-9_-]`).ReplaceAllString(user, "_")
}

type throttleNotice struct {
	Until    time.Time `json:"until"`
	Instance string    `json:"instance"`
}

// ShareThrottle connects one process's Dataverse client to the others of the same user over core
// NATS (a passing signal, not worth storing): notify publishes this process's 429s; hold is called
// with the others'. Unsubscribe with the returned subscription.
func ShareThrottle(nc *nats.Conn, user string, hold func(until time.Time)) (notify func(until time.Time), sub *nats.Subscription, err error) {
	self := nuid.Next()
	subject := ThrottleSubject(user)
	sub, err = nc.Subscribe(subject, func(m *nats.Msg) {
		var n throttleNotice
		if json.Unmarshal(m.Data, &n) == nil && n.Instance != self && time.Until(n.Until) > 0 {
			hold(n.Until)
		}
	})
	if err != nil {
		return nil, nil, fmt.Errorf("natsjs: subscribe %s: %w", subject, err)
	}
	notify = func(until time.Time) {
		data, _ := json.Marshal(throttleNotice{Until: until, Instance: self})
		_ = nc.Publish(subject, data) // best effort: each worker still learns from its own 429s
	}
	return notify, sub, nil
}
