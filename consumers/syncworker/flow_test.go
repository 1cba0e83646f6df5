package syncworker

import "testing"

func TestCredentialsAreScrubbedByHeaderNameAndByValue(t *testing.T) {
	in := map[string][]string{
		"Authorization":  {"Bearer abc"},
		"Authentication": {"Bearer abc"},
		"X-Auth":         {"Bearer abc"},
		"X-Forwarded":    {"bearer abc.def"},
		"X-Basic":        {"Basic dXNlcjpwYXNz"},
		"X-Jwt":          {"eyJhbGciOi.eyJzdWIiOi.sig"},
		"X-Api-Key":      {"k"},
		"Password":       {"p"},
		"Traceparent":    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		"Ce-Source":      {"bc://cronus"},
	}
	out := scrubHeaders(in)
	for _, k := range []string{"Authorization", "Authentication", "X-Auth", "X-Forwarded", "X-Basic", "X-Jwt", "X-Api-Key", "Password"} {
		if out[k][0] != "(removed)" {
			t.Errorf("%s: %q kept", k, out[k][0])
		}
	}
	for _, k := range []string{"Traceparent", "Ce-Source"} {
		if out[k][0] != in[k][0] {
			t.Errorf("%s: %q changed to %q", k, in[k][0], out[k][0])
		}
	}
}
