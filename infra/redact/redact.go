// Package redact removes credentials from what dvsync keeps or shows of the events publishers
// send: header values (by the header's name and by the form of the value), free text and JSON
// bodies. It is the one place these rules live: the worker and the projector scrub headers with
// it before an error is stored, the API and the page redact everything they show with it. Stored
// change bytes stay intact, since a replay sends them again.
package redact

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"regexp"
	"strings"
)

const Redacted = "(redacted)"

// secretName matches field and header names whose values are secrets.
var secretName = regexp.MustCompile(`(?i)passw(or)?d|passphrase|secret|token|api[-_]?key|authori[sz]ation|credential|cookie|` +
	`private[-_]?key|access[-_]?key|session[-_]?id|^(pwd|pass|sig|signature)$|auth$`)

// credentialValue matches a header value that is a credential, whatever the header's name.
var credentialValue = regexp.MustCompile(`(?i)^\s*(bearer|basic|digest|negotiate|ntlm|hoba|mutual|vapid|aws4-hmac-sha256|scram-sha-\d+)\s+\S`)

var (
	// bearerInText is a bearer token within free text.
	bearerInText = regexp.MustCompile(`(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]{8,}=*`)
	// basicInText is Basic credentials within free text; only base64 of "user:password" is
	// Redacted, so that "Basic validation failed" stays readable.
	basicInText = regexp.MustCompile(`(?i)\b(basic)\s+([A-Za-z0-9+/]{4,}={0,2})`)
	jwtInText   = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*`)
	// secretPair is name=value or "name": "value" with a secret name, as in a request body or
	// a connection string.
	secretPair = regexp.MustCompile(`(?i)("?[\w.-]*(?:passw(?:or)?d|passphrase|secret|token|api[-_]?key|credential)[\w.-]*"?\s*[:=]\s*)("(?:[^"\\]|\\.)*"|[^\s,;&}\]"]+)`)
	// urlPassword is the password of user:password@ in a URL.
	urlPassword = regexp.MustCompile(`(\w+://[^:/@\s]*):[^@\s/]+@`)
)

// Text removes credentials from free text: bearer and basic credentials, JWTs, secret
// name=value pairs and URL passwords.
func Text(s string) string {
	if s == "" {
		return s
	}
	s = bearerInText.ReplaceAllString(s, "$1 "+Redacted)
	s = basicInText.ReplaceAllStringFunc(s, func(m string) string {
		sub := basicInText.FindStringSubmatch(m)
		if b, err := base64.StdEncoding.DecodeString(sub[2]); err == nil && bytes.IndexByte(b, ':') > 0 {
			return sub[1] + " " + Redacted
		}
		return m
	})
	s = jwtInText.ReplaceAllString(s, Redacted)
	s = secretPair.ReplaceAllStringFunc(s, func(m string) string {
		sub := secretPair.FindStringSubmatch(m)
		if strings.HasPrefix(sub[2], `"`) {
			return sub[1] + `"` + Redacted + `"`
		}
		return sub[1] + Redacted
	})
	return urlPassword.ReplaceAllString(s, "$1:"+Redacted+"@")
}

// Headers redacts the values of secret-named headers and every credential-looking value.
func Headers(h map[string][]string) map[string][]string {
	if h == nil {
		return nil
	}
	out := make(map[string][]string, len(h))
	for name, values := range h {
		vs := make([]string, len(values))
		for i, v := range values {
			switch {
			case secretName.MatchString(name), credentialValue.MatchString(v):
				vs[i] = Redacted
			default:
				vs[i] = Text(v)
			}
		}
		out[name] = vs
	}
	return out
}

// maxJSONDepth bounds the nesting JSON follows; deeper bodies are Redacted as text.
const maxJSONDepth = 1000

// JSON redacts the values of secret-named fields at any depth, and credentials in string
// values, keeping the fields' order. It fails when data is not one JSON value.
func JSON(data []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var out bytes.Buffer
	if err := value(dec, &out, 0); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("more than one JSON value")
	}
	return out.Bytes(), nil
}

func value(dec *json.Decoder, out *bytes.Buffer, depth int) error {
	if depth > maxJSONDepth {
		return errors.New("nested too deep")
	}
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch t := tok.(type) {
	case json.Delim:
		closing := map[json.Delim]json.Delim{'{': '}', '[': ']'}[t]
		out.WriteString(t.String())
		for i := 0; dec.More(); i++ {
			if i > 0 {
				out.WriteByte(',')
			}
			if t == '{' {
				k, err := dec.Token()
				if err != nil {
					return err
				}
				name, _ := k.(string)
				writeJSONString(out, name)
				out.WriteByte(':')
				if secretName.MatchString(name) {
					var skip json.RawMessage
					if err := dec.Decode(&skip); err != nil {
						return err
					}
					writeJSONString(out, Redacted)
					continue
				}
			}
			if err := value(dec, out, depth+1); err != nil {
				return err
			}
		}
		if _, err := dec.Token(); err != nil {
			return err
		}
		out.WriteString(closing.String())
	case string:
		if credentialValue.MatchString(t) {
			writeJSONString(out, Redacted)
		} else {
			writeJSONString(out, Text(t))
		}
	case json.Number:
		out.WriteString(t.String())
	case bool:
		if t {
			out.WriteString("true")
		} else {
			out.WriteString("false")
		}
	case nil:
		out.WriteString("null")
	}
	return nil
}

func writeJSONString(out *bytes.Buffer, s string) {
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	out.Truncate(out.Len() - 1) // Encode's newline
}

// Body redacts a stored change event: as JSON when it is JSON, else as text.
func Body(b []byte) []byte {
	if len(b) == 0 {
		return b
	}
	if out, err := JSON(b); err == nil {
		return out
	}
	return []byte(Text(string(b)))
}

// SecretName reports whether a field or header of this name holds a secret.
func SecretName(name string) bool { return secretName.MatchString(name) }
