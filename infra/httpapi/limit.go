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

// Failed sign-ins (a token that is not valid, on the page or the API) are limited per client
// address: after maxFailedSignIns in signInWindow, every sign-in from that address is refused
// until the window ends. The count is kept per process: with several serve replicas an address
// gets that many per replica.
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

// limited tells whether the request's address may not try to sign in now, and for how long.
func (l *signInLimiter) limited(r *http.Request) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	f := l.clients[l.key(clientOf(r), now)]
	if f == nil || now.Sub(f.since) >= signInWindow || f.n < maxFailedSignIns {
		return 0, false
	}
	return f.since.Add(signInWindow).Sub(now), true
}

// fail counts a failed sign-in of the request's address.
func (l *signInLimiter) fail(r *http.Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	k := l.key(clientOf(r), now)
	f := l.clients[k]
	if f == nil || now.Sub(f.since) >= signInWindow {
		f = &failures{since: now}
		l.clients[k] = f
	}
	f.n++
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

// failedSignIn logs and counts a token that is not valid; the log names no token.
func (s *Server) failedSignIn(r *http.Request) {
	s.signIns.fail(r)
	if s.Log != nil {
		s.Log.Warn("sign-in refused: the token is not valid", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path)
	}
}
