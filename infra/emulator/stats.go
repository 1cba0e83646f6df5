package emulator

import (
	"encoding/json"
	"time"

	"github.com/google/uuid"
)

// Stats is what GET /_emulator/stats answers: enough for a benchmark to tell how much of each
// application user's service-protection budget a client used.
type Stats struct {
	// InFlight is the number of Web API requests being served now (see InFlight).
	InFlight int64 `json:"inFlight"`
	// Users are the application users by the client id of their app registration.
	Users map[string]UserStats `json:"users"`
}

// UserStats is what one application user has been served since the emulator started or was
// reset. Requests answered by an injected fault or with 401 are not counted.
type UserStats struct {
	UserID uuid.UUID `json:"userId"`
	// Requests are the Web API requests admitted, as the request limit counts them ($batch: one).
	Requests int64 `json:"requests"`
	// Records are the records those requests carried, as the latency model counts them.
	Records int64 `json:"records"`
	// ExecutionTimeMs is their execution time, latency included, as the execution-time limit
	// counts it.
	ExecutionTimeMs float64 `json:"executionTimeMs"`
	// Throttled counts the 429 answers by error code (0x80072322, 0x80072321, 0x80072326).
	Throttled map[string]int64 `json:"throttled"`
	// Limits are the service-protection limits the user is held to, per window.
	Limits Limits `json:"limits"`
}

// Stats returns the per-user counters; it costs one step per application user.
func (e *Emulator) Stats() Stats {
	e.mu.Lock()
	apps := make([]App, 0, len(e.apps))
	for _, a := range e.apps {
		apps = append(apps, a)
	}
	e.mu.Unlock()
	out := Stats{InFlight: e.InFlight(), Users: make(map[string]UserStats, len(apps))}
	p := e.prot
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, a := range apps {
		us := UserStats{UserID: a.UserID, Throttled: map[string]int64{}, Limits: p.limits}
		if s := p.served[a.UserID]; s != nil {
			us.Requests, us.Records = s.requests, s.records
			us.ExecutionTimeMs = float64(s.executed.Microseconds()) / 1000
			for code, n := range s.throttled {
				us.Throttled[code] = n
			}
		}
		out.Users[a.ClientID] = us
	}
	return out
}

// limitsJSON is the form of Limits in the admin API: durations as Go duration strings ("5m0s").
type limitsJSON struct {
	Window        duration `json:"window"`
	Requests      int      `json:"requests"`
	ExecutionTime duration `json:"executionTime"`
	Concurrent    int      `json:"concurrent"`
	DOPHint       int      `json:"dopHint"`
}

// MarshalJSON writes the limits as POST /_emulator/limits takes them.
func (l Limits) MarshalJSON() ([]byte, error) {
	return json.Marshal(limitsJSON{duration(l.Window), l.Requests, duration(l.ExecutionTime), l.Concurrent, l.DOPHint})
}

// UnmarshalJSON reads the limits as POST /_emulator/limits takes them.
func (l *Limits) UnmarshalJSON(b []byte) error {
	var v limitsJSON
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*l = Limits{Window: time.Duration(v.Window), Requests: v.Requests, ExecutionTime: time.Duration(v.ExecutionTime),
		Concurrent: v.Concurrent, DOPHint: v.DOPHint}
	return nil
}
