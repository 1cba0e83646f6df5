package emulator

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Limits are Dataverse's service-protection limits per user, over a sliding window. Their JSON
// form is the admin API's (see limitsJSON).
type Limits struct {
	Window        time.Duration
	Requests      int
	ExecutionTime time.Duration
	Concurrent    int
	// DOPHint is the x-ms-dop-hint every response carries: the parallelism Dataverse recommends.
	DOPHint int
}

// DefaultLimits are Dataverse's published numbers.
var DefaultLimits = Limits{Window: 5 * time.Minute, Requests: 6000, ExecutionTime: 20 * time.Minute, Concurrent: 52, DOPHint: 4}

// Latency is added to every Web API request: PerRequest once and PerRecord for each record it
// carries (a bulk action's targets, a batch's parts), so that benchmarks meet realistic round trips.
type Latency struct {
	PerRequest time.Duration `json:"perRequest"`
	PerRecord  time.Duration `json:"perRecord"`
}

// Fault is an injected failure of the Web API.
type Fault struct {
	// Kind: "status" answers Status with a gateway-like body, "slow" delays by Delay, "drop"
	// closes the connection without an answer, "outage" answers 503 to everything until it ends.
	Kind   string        `json:"kind"`
	Status int           `json:"status,omitempty"`
	Delay  time.Duration `json:"delay,omitempty"`
	// Count is how many requests the fault hits (0: unlimited); For bounds an outage.
	Count int           `json:"count,omitempty"`
	For   time.Duration `json:"for,omitempty"`
	until time.Time
}

// usage is what a user spent in the current window, as the limits count it.
type usage struct {
	requests []time.Time
	exec     []execution
	spent    time.Duration // the sum of exec's took
	inflight int
}

// served is what a user has been served since the emulator started or was reset, for the stats.
type served struct {
	requests, records int64
	executed          time.Duration
	throttled         map[string]int64 // 429 answers by error code
}

type execution struct {
	at   time.Time
	took time.Duration
}

// protection is the service-protection, latency and fault state; it has its own lock so that
// throttling decisions never wait for the data lock.
type protection struct {
	mu      sync.Mutex
	limits  Limits
	latency Latency
	faults  []*Fault
	users   map[uuid.UUID]*usage
	served  map[uuid.UUID]*served
}

func newProtection() *protection {
	p := &protection{}
	p.reset()
	return p
}

// reset restores Dataverse's limits and forgets latency, faults, usage and stats. It changes the
// protection in place: requests being served hold it without the data lock.
func (p *protection) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.limits, p.latency, p.faults = DefaultLimits, Latency{}, nil
	p.users, p.served = map[uuid.UUID]*usage{}, map[uuid.UUID]*served{}
}

func (p *protection) servedTo(u uuid.UUID) *served {
	s := p.served[u]
	if s == nil {
		s = &served{throttled: map[string]int64{}}
		p.served[u] = s
	}
	return s
}

// SetLimits replaces the service-protection limits (zero fields keep Dataverse's numbers).
func (e *Emulator) SetLimits(l Limits) {
	d := DefaultLimits
	if l.Window > 0 {
		d.Window = l.Window
	}
	if l.Requests > 0 {
		d.Requests = l.Requests
	}
	if l.ExecutionTime > 0 {
		d.ExecutionTime = l.ExecutionTime
	}
	if l.Concurrent > 0 {
		d.Concurrent = l.Concurrent
	}
	if l.DOPHint > 0 {
		d.DOPHint = l.DOPHint
	}
	e.prot.mu.Lock()
	e.prot.limits, e.prot.users = d, map[uuid.UUID]*usage{}
	e.prot.mu.Unlock()
}

// SetLatency sets the latency model.
func (e *Emulator) SetLatency(l Latency) {
	e.prot.mu.Lock()
	e.prot.latency = l
	e.prot.mu.Unlock()
}

// InjectFault adds a fault; ClearFaults removes them all.
func (e *Emulator) InjectFault(f Fault) error {
	switch f.Kind {
	case "status":
		if f.Status < 400 {
			return fmt.Errorf("emulator: a status fault needs an error status, not %d", f.Status)
		}
	case "slow", "drop":
	case "outage":
		if f.For <= 0 {
			return fmt.Errorf("emulator: an outage needs a duration (for)")
		}
		f.until = time.Now().Add(f.For)
	default:
		return fmt.Errorf("emulator: fault kind %q is not status, slow, drop or outage", f.Kind)
	}
	e.prot.mu.Lock()
	e.prot.faults = append(e.prot.faults, &f)
	e.prot.mu.Unlock()
	return nil
}

// ClearFaults removes every injected fault.
func (e *Emulator) ClearFaults() {
	e.prot.mu.Lock()
	e.prot.faults = nil
	e.prot.mu.Unlock()
}

// nextFault returns the fault that hits this request, if any, and uses one of its count.
func (p *protection) nextFault(now time.Time) *Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	kept := p.faults[:0]
	var hit *Fault
	for _, f := range p.faults {
		if f.Kind == "outage" && now.After(f.until) {
			continue
		}
		if hit == nil {
			hit = f
			if f.Count > 0 {
				f.Count--
				if f.Count == 0 {
					continue
				}
			}
		}
		kept = append(kept, f)
	}
	p.faults = kept
	return hit
}

// The bodies real gateways send when Dataverse's front end fails (IIS, ARR).
const (
	body503 = `<html><head><title>Service Unavailable</title></head><body><h2>Service Unavailable</h2><hr><p>HTTP Error 503. The service is unavailable.</p></body></html>`
	body502 = `<html><head><title>502 - Web server received an invalid response while acting as a gateway or proxy server.</title></head><body><h2>502 - Web server received an invalid response while acting as a gateway or proxy server.</h2></body></html>`
)

// applyFault answers a request the fault hits; it reports whether the request is answered.
func applyFault(w http.ResponseWriter, f *Fault) bool {
	switch f.Kind {
	case "slow":
		time.Sleep(f.Delay)
		return false
	case "drop":
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return true
			}
		}
		panic(http.ErrAbortHandler) // closes the connection without an answer
	}
	status, body := f.Status, body503
	if f.Kind == "outage" {
		status = http.StatusServiceUnavailable
	}
	if status == http.StatusBadGateway {
		body = body502
	}
	w.Header().Set("Content-Type", "text/html")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
	return true
}

// admit applies the service-protection limits to one request of u. It returns a release func to
// call with the request's execution time and the records it carried, or the 429 to answer.
func (p *protection) admit(u uuid.UUID, now time.Time) (func(took time.Duration, records int), *apiError, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	us := p.users[u]
	if us == nil {
		us = &usage{}
		p.users[u] = us
	}
	if throttled, wait := us.exceeded(p.limits, now); throttled != nil {
		p.servedTo(u).throttled[throttled.code]++
		return nil, throttled, wait
	}
	us.requests = append(us.requests, now)
	us.inflight++
	return func(took time.Duration, records int) {
		p.mu.Lock()
		defer p.mu.Unlock()
		us.inflight--
		us.exec = append(us.exec, execution{at: now, took: took})
		us.spent += took
		s := p.servedTo(u)
		s.requests++
		s.records += int64(records)
		s.executed += took
	}, nil, 0
}

// exceeded drops what left the window and returns the 429 of the first limit the user is at, and
// when to try again; nil when a request may start now.
func (us *usage) exceeded(l Limits, now time.Time) (*apiError, time.Duration) {
	from := now.Add(-l.Window)
	for len(us.requests) > 0 && us.requests[0].Before(from) {
		us.requests = us.requests[1:]
	}
	for len(us.exec) > 0 && us.exec[0].at.Before(from) {
		us.spent -= us.exec[0].took
		us.exec = us.exec[1:]
	}
	secs := int(l.Window.Seconds())
	switch {
	case us.inflight >= l.Concurrent:
		return &apiError{429, "0x80072326", fmt.Sprintf("Number of concurrent requests exceeded the limit of %d.", l.Concurrent), "ThrottlingConcurrencyLimitExceededError"}, time.Second
	case len(us.requests) >= l.Requests:
		return &apiError{429, "0x80072322", fmt.Sprintf("Number of requests exceeded the limit of %d over time window of %d seconds.", l.Requests, secs), "ThrottlingBurstRequestLimitExceededError"},
			us.requests[0].Add(l.Window).Sub(now)
	case us.spent >= l.ExecutionTime:
		return &apiError{429, "0x80072321", fmt.Sprintf("Combined execution time of incoming requests exceeded limit of %s milliseconds over time window of %d seconds. Decrease number of concurrent requests or reduce the duration of requests and try again later.", thousands(l.ExecutionTime.Milliseconds()), secs), "ThrottlingTimeExceededError"},
			us.exec[0].at.Add(l.Window).Sub(now)
	}
	return nil, 0
}

// retryAfterSeconds writes a wait as Retry-After does: whole seconds, at least one.
func retryAfterSeconds(d time.Duration) string {
	return strconv.Itoa(max(1, int(math.Ceil(d.Seconds()))))
}

func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
