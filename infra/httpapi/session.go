package httpapi

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"
)

const sessionCookie = "dvsync_session"

// sessionLifetime bounds a signed-in page session.
const sessionLifetime = 12 * time.Hour

// session is what the page's cookie carries, signed with the server's key: which session it is,
// until when, the token its forms must send back (cross-site request forgery protection) and a
// keyed fingerprint of the API token it was opened with. Who signed in is not in it: every
// request finds the token by its fingerprint among the configured ones, so that removing a
// token, or changing its role, takes effect at once.
type session struct {
	ID   string `json:"i"`
	Exp  int64  `json:"e"`
	CSRF string `json:"c"`
	// Token is HMAC(key, SHA-256(token)): it names the token without revealing it.
	Token string `json:"t"`
}

// SessionStore remembers the sessions that were signed out before they expired, for every serve
// replica that shares the database (the cookie itself cannot be taken back).
type SessionStore interface {
	EndSession(ctx context.Context, id string, expires time.Time) error
	SessionEnded(ctx context.Context, id string) (bool, error)
}

// errNoSession is a request without a valid, live session.
var errNoSession = errors.New("not signed in")

func (s *Server) key() []byte {
	s.keyOnce.Do(func() {
		if len(s.SessionKey) == 0 {
			s.SessionKey = make([]byte, 32)
			_, _ = rand.Read(s.SessionKey)
		}
	})
	return s.SessionKey
}

func (s *Server) mac(parts ...string) []byte {
	m := hmac.New(sha256.New, s.key())
	for _, p := range parts {
		m.Write([]byte(p))
		m.Write([]byte{0})
	}
	return m.Sum(nil)
}

func (s *Server) sign(payload string) string {
	return base64.RawURLEncoding.EncodeToString(s.mac("session", payload))
}

func (s *Server) fingerprint(tokenHash [32]byte) string {
	return base64.RawURLEncoding.EncodeToString(s.mac("token", string(tokenHash[:]))[:18])
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *Server) startSession(w http.ResponseWriter, r *http.Request, tokenHash [32]byte) {
	data, _ := json.Marshal(session{ID: randomHex(16), Exp: time.Now().Add(sessionLifetime).Unix(), CSRF: randomHex(18),
		Token: s.fingerprint(tokenHash)})
	payload := base64.RawURLEncoding.EncodeToString(data)
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: payload + "." + s.sign(payload), Path: "/",
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secure(r), MaxAge: int(sessionLifetime.Seconds())})
}

// endSession signs a session out for every replica, then clears the cookie.
func (s *Server) endSession(w http.ResponseWriter, r *http.Request, ses session) error {
	if err := s.Couplings.EndSession(r.Context(), ses.ID, time.Unix(ses.Exp, 0)); err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: secure(r)})
	return nil
}

// secure tells whether the page is served over TLS (directly or behind a proxy that says so).
func secure(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

// sessionOf returns the request's session and who it is for: signed by this key, not expired,
// not signed out, and opened with a token that is still configured. An error other than
// errNoSession means the session store could not be asked.
func (s *Server) sessionOf(r *http.Request) (session, Principal, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return session{}, Principal{}, errNoSession
	}
	payload, sig, ok := strings.Cut(c.Value, ".")
	if !ok || subtle.ConstantTimeCompare([]byte(sig), []byte(s.sign(payload))) != 1 {
		return session{}, Principal{}, errNoSession
	}
	data, err := base64.RawURLEncoding.DecodeString(payload)
	var ses session
	if err != nil || json.Unmarshal(data, &ses) != nil || time.Now().Unix() > ses.Exp || ses.ID == "" || ses.Token == "" {
		return session{}, Principal{}, errNoSession
	}
	p, ok := s.Tokens.find(func(h [32]byte) bool {
		return subtle.ConstantTimeCompare([]byte(s.fingerprint(h)), []byte(ses.Token)) == 1
	})
	if !ok {
		return session{}, Principal{}, errNoSession
	}
	ended, err := s.Couplings.SessionEnded(r.Context(), ses.ID)
	if err != nil {
		return session{}, Principal{}, err
	}
	if ended {
		return session{}, Principal{}, errNoSession
	}
	return ses, p, nil
}

// validCSRF checks a form's token against the session's.
func validCSRF(r *http.Request, ses session) bool {
	return subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(ses.CSRF)) == 1
}
