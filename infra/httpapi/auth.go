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

// MinTokenLength is the shortest plaintext token accepted: shorter ones can be guessed.
const MinTokenLength = 24

// ParseTokens reads "name:role:token" entries separated by ';' or newlines. The token part may
// be given as "sha256=<hex>" so that configuration holds no usable secret. Errors name an
// entry by its name or its number, never by its token.
func ParseTokens(spec string) (*Tokens, error) {
	t := &Tokens{byHash: map[[32]byte]Principal{}}
	n := 0
	for _, entry := range strings.FieldsFunc(spec, func(r rune) bool { return r == ';' || r == '\n' }) {
		entry = strings.TrimSpace(entry)
		if entry == "" || strings.HasPrefix(entry, "#") {
			continue
		}
		n++
		parts := strings.SplitN(entry, ":", 3)
		if len(parts) != 3 || parts[0] == "" || parts[2] == "" {
			// Without its colons an entry may be the bare token: not even its first part is shown.
			return nil, fmt.Errorf("api tokens: entry %d is not name:role:token", n)
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
			if len(parts[2]) < MinTokenLength {
				return nil, fmt.Errorf("api tokens: %s: the token is shorter than %d characters; make one with `openssl rand -hex 24`, or give its sha256=<hex>",
					parts[0], MinTokenLength)
			}
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
	_, p, ok := t.lookup(token)
	return p, ok
}

// lookup returns a token's hash and principal.
func (t *Tokens) lookup(token string) ([32]byte, Principal, bool) {
	if t == nil || token == "" {
		return [32]byte{}, Principal{}, false
	}
	h := sha256.Sum256([]byte(token))
	p, ok := t.byHash[h]
	return h, p, ok
}

// find returns the principal of the token whose hash matches, as a session remembers it.
func (t *Tokens) find(match func(hash [32]byte) bool) (Principal, bool) {
	if t == nil {
		return Principal{}, false
	}
	for h, p := range t.byHash {
		if match(h) {
			return p, true
		}
	}
	return Principal{}, false
}

// NewToken returns a random token, for `dvsync dev`.
func NewToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return "dvs_" + hex.EncodeToString(b)
}

// bearer reads the bearer token of a request; the scheme is case-insensitive (RFC 7235).
func bearer(r *http.Request) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimSpace(tok), true
}

// require wraps a handler with authentication and the role it needs. The token is looked up
// first: a valid one always passes. A token that is not valid is a failed sign-in: logged, and
// answered 429 once its address has sent too many.
func (s *Server) require(need Role, h func(http.ResponseWriter, *http.Request, Principal)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, sent := bearer(r)
		p, ok := s.Tokens.Lookup(tok)
		if !ok {
			if sent {
				if wait, limited := s.failedSignIn(r); limited {
					tooMany(w, wait)
					problem(w, http.StatusTooManyRequests, "Too many failed sign-ins",
						"the token is not valid, and this address sent too many tokens that are not valid; try again later")
					return
				}
			}
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
