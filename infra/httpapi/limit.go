package httpapi

import (
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// Failed sign-ins (a token that is not valid, on the page or the API) are counted per client
// address: after maxFailedSignIns in signInWindow, a further token that is not valid from that
// address is answered 429 until the window ends, and no longer logged one by one. A valid token
// always passes: the count is by address, and one noisy client (or a proxy every client shares,
// or the shared count beyond maxTrackedClients) must not lock out the others. Guessing is kept out
// by the tokens' length (MinTokenLength), not by this limit. The count is kept per process: with
// several serve replicas an address gets that many per replica.
const (
	maxFailedSignIns = 10
	signInWindow     = time.Minute
	// maxTrackedClients bounds the memory of the limiter; beyond it, new addresses share one count.
	maxTrackedClients = 10000
)

type signInLimiter struct {
	mu      sync.Mutex
	now     func() time.Time
	clients map[string]*failures
}

type failures struct {
	since time.Time
	n     int
}

func newSignInLimiter() *signInLimiter {
	return &signInLimiter{now: time.Now, clients: map[string]*failures{}}
}

// clientOf is the address a request came from; IPv6 clients count by their /64 network, since
// one host commonly has many addresses of it.
func clientOf(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	if addr.Is4In6() {
		addr = addr.Unmap()
	}
	if addr.Is6() {
		p, _ := addr.Prefix(64)
		return p.String()
	}
	return addr.String()
}

// fail counts a failed sign-in of the request's address. When the address has already failed
// maxFailedSignIns times in this window it is not counted again, and fail says how long until the
// window ends.
func (l *signInLimiter) fail(r *http.Request) (wait time.Duration, limited bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	k := l.key(clientOf(r), now)
	f := l.clients[k]
	if f == nil || now.Sub(f.since) >= signInWindow {
		f = &failures{since: now}
		l.clients[k] = f
	}
	if f.n >= maxFailedSignIns {
		return f.since.Add(signInWindow).Sub(now), true
	}
	f.n++
	return 0, false
}

// key is the client's entry, or the shared one when the limiter is full of live entries.
func (l *signInLimiter) key(client string, now time.Time) string {
	if _, ok := l.clients[client]; ok || len(l.clients) < maxTrackedClients {
		return client
	}
	for k, f := range l.clients {
		if now.Sub(f.since) >= signInWindow {
			delete(l.clients, k)
		}
	}
	if len(l.clients) < maxTrackedClients {
		return client
	}
	return "(others)"
}

// tooMany sets Retry-After, in whole seconds rounded up.
func tooMany(w http.ResponseWriter, wait time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(wait.Seconds())))))
}

// failedSignIn counts a token that is not valid and logs it, naming no token; it reports whether
// the address has sent too many, and then logs nothing, so that a flood of guesses cannot flood
// the log.
func (s *Server) failedSignIn(r *http.Request) (wait time.Duration, limited bool) {
	if wait, limited = s.signIns.fail(r); limited {
		return wait, true
	}
	if s.Log != nil {
		s.Log.Warn("sign-in refused: the token is not valid", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path)
	}
	return 0, false
}
