package redact_test

import (
	"strings"
	"testing"

	"github.com/dvsync/dvsync/infra/redact"
)

func TestRedactionOfText(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://dvsync:pw@db:5432/x":           "postgres://dvsync:(redacted)@db:5432/x",
		"user=postgres password=pw host=db":        "user=postgres password=(redacted) host=db",
		`{"client_secret": "s", "name": "n"}`:      `{"client_secret": "(redacted)", "name": "n"}`,
		"Authorization: bearer abcdefgh12345":      "Authorization: bearer (redacted)",
		"Basic validation failed":                  "Basic validation failed",
		"a bearer of bad news":                     "a bearer of bad news",
		"token expired":                            "token expired",
		"Basic dXNlcjpwYXNz, then":                 "Basic (redacted), then",
		"nothing to hide here, key=C10000, v=3 ok": "nothing to hide here, key=C10000, v=3 ok",
	} {
		if got := redact.Text(in); got != want {
			t.Errorf("redact.Text(%q) = %q, want %q", in, got, want)
		}
	}
	for _, body := range []string{`[[[[`, `{"a":1} {"b":2}`, strings.Repeat("[", 2000) + strings.Repeat("]", 2000)} {
		if _, err := redact.JSON([]byte(body)); err == nil {
			t.Errorf("redact.JSON(%.20q) took it for one JSON value", body)
		}
	}
}

func TestCredentialsInHeadersAreRedactedByNameAndByValue(t *testing.T) {
	in := map[string][]string{
		"Authorization":  {"Bearer abc"},
		"Authentication": {"Bearer abc"},
		"X-Auth":         {"Bearer abc"},
		"X-Forwarded":    {"bearer abc.def"},
		"X-Basic":        {"Basic dXNlcjpwYXNz"},
		"X-Jwt":          {"eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.sig"},
		"X-Api-Key":      {"k"},
		"Password":       {"p"},
		"Traceparent":    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		"Ce-Source":      {"bc://cronus"},
	}
	out := redact.Headers(in)
	for _, k := range []string{"Authorization", "Authentication", "X-Auth", "X-Forwarded", "X-Basic", "X-Jwt", "X-Api-Key", "Password"} {
		if out[k][0] == in[k][0] {
			t.Errorf("%s: %q kept", k, out[k][0])
		}
	}
	for _, k := range []string{"Traceparent", "Ce-Source"} {
		if out[k][0] != in[k][0] {
			t.Errorf("%s: %q changed to %q", k, in[k][0], out[k][0])
		}
	}
}
