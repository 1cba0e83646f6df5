package httpapi

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
)

// Role says what a token may do: a viewer reads; an operator also replays and deletes.
type Role string

const (
	RoleViewer   Role = "viewer"
	RoleOperator Role = "operator"
)

func (r Role) allows(need Role) bool { return r == RoleOperator || need == RoleViewer }

// Principal is who a request is from.
type Principal struct {
	Name string
	Role Role
}

// Tokens are the API tokens, kept only as SHA-256 hashes.
type Tokens struct {
	byHash map[[32]byte]Principal
}

// ParseTokens reads "name:role:token" entries separated by ';' or newlines. The token part may
// be given as "sha256=<hex>" so that configuration holds no usable secret.
func ParseTokens(spec string) (*Tokens, error) {
	t := &Tokens{byHash: map[[32]byte]Principal{}}
	for _, entry := range strings.FieldsFunc(spec, func(r rune) bool { return r == ';' || r == '\n' }) {
		entry = strings.TrimSpace(entry)
		if entry == "" || strings.HasPrefix(entry, "#") {
			continue
		}
		parts := strings.SplitN(entry, ":", 3)
		if len(parts) != 3 || parts[0] == "" || parts[2] == "" {
			return nil, fmt.Errorf("api tokens: an entry is not name:role:token (entry for %q)", parts[0])
		}
		role := Role(parts[1])
		if role != RoleViewer && role != RoleOperator {
			return nil, fmt.Errorf("api tokens: %s: role %q is not viewer or operator", parts[0], parts[1])
		}
		var h [32]byte
		if hexHash, ok := strings.CutPrefix(parts[2], "sha256="); ok {
			b, err := hex.DecodeString(hexHash)
			if err != nil || len(b) != 32 {
				return nil, fmt.Errorf("api tokens: %s: sha256= needs 64 hex digits", parts[0])
			}
			copy(h[:], b)
		} else {
			h = sha256.Sum256([]byte(parts[2]))
		}
		t.byHash[h] = Principal{Name: parts[0], Role: role}
	}
	return t, nil
}

// Add registers a token.
func (t *Tokens) Add(name string, role Role, token string) {
	t.byHash[sha256.Sum256([]byte(token))] = Principal{Name: name, Role: role}
}

// Lookup returns the principal of a token.
func (t *Tokens) Lookup(token string) (Principal, bool) {
	if t == nil || token == "" {
		return Principal{}, false
	}
	p, ok := t.byHash[sha256.Sum256([]byte(token))]
	return p, ok
}

// NewToken returns a random token, for `dvsync dev`.
func NewToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return "dvs_" + hex.EncodeToString(b)
}

// authenticate reads the bearer token of a request.
func (s *Server) authenticate(r *http.Request) (Principal, bool) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return Principal{}, false
	}
	return s.Tokens.Lookup(strings.TrimSpace(tok))
}

// require wraps a handler with authentication and the role it needs.
func (s *Server) require(need Role, h func(http.ResponseWriter, *http.Request, Principal)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, ok := s.authenticate(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="dvsync"`)
			problem(w, http.StatusUnauthorized, "Unauthorized", "send an API token as Authorization: Bearer <token>")
			return
		}
		if !p.Role.allows(need) {
			problem(w, http.StatusForbidden, "Forbidden", fmt.Sprintf("%s is a %s; this needs an %s token", p.Name, p.Role, need))
			return
		}
		h(w, r, p)
	}
}
