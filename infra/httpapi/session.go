package httpapi

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"time"
)

const sessionCookie = "dvsync_session"

// sessionLifetime bounds a signed-in page session.
const sessionLifetime = 12 * time.Hour

// session is what the page's cookie carries, signed with the server's key: who signed in, until
// when, and the token its forms must send back (cross-site request forgery protection).
type session struct {
	Name string `json:"n"`
	Role Role   `json:"r"`
	Exp  int64  `json:"e"`
	CSRF string `json:"c"`
}

func (s *Server) key() []byte {
	s.keyOnce.Do(func() {
		if len(s.SessionKey) == 0 {
			s.SessionKey = make([]byte, 32)
			_, _ = rand.Read(s.SessionKey)
		}
	})
	return s.SessionKey
}

func (s *Server) sign(payload string) string {
	m := hmac.New(sha256.New, s.key())
	m.Write([]byte(payload))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (s *Server) startSession(w http.ResponseWriter, r *http.Request, p Principal) {
	nonce := make([]byte, 18)
	_, _ = rand.Read(nonce)
	data, _ := json.Marshal(session{Name: p.Name, Role: p.Role, Exp: time.Now().Add(sessionLifetime).Unix(), CSRF: hex.EncodeToString(nonce)})
	payload := base64.RawURLEncoding.EncodeToString(data)
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: payload + "." + s.sign(payload), Path: "/",
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secure(r), MaxAge: int(sessionLifetime.Seconds())})
}

func endSession(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: secure(r)})
}

// secure tells whether the page is served over TLS (directly or behind a proxy that says so).
func secure(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

func (s *Server) sessionOf(r *http.Request) (session, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return session{}, false
	}
	payload, sig, ok := strings.Cut(c.Value, ".")
	if !ok || subtle.ConstantTimeCompare([]byte(sig), []byte(s.sign(payload))) != 1 {
		return session{}, false
	}
	data, err := base64.RawURLEncoding.DecodeString(payload)
	var ses session
	if err != nil || json.Unmarshal(data, &ses) != nil || time.Now().Unix() > ses.Exp {
		return session{}, false
	}
	return ses, true
}

// validCSRF checks a form's token against the session's.
func validCSRF(r *http.Request, ses session) bool {
	return subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(ses.CSRF)) == 1
}
