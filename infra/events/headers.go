package events

import "regexp"

// secretHeader names headers that may carry credentials.
var secretHeader = regexp.MustCompile(`(?i)authorization|cookie|token|secret|password|api-?key|credential`)

// ScrubHeaders returns a change's headers with the values of those that may carry credentials
// replaced, so that they are never stored with an error nor shown.
func ScrubHeaders(h map[string][]string) map[string][]string {
	out := make(map[string][]string, len(h))
	for k, v := range h {
		if secretHeader.MatchString(k) {
			out[k] = []string{"(removed)"}
			continue
		}
		out[k] = v
	}
	return out
}
