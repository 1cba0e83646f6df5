package dataverse

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/dvsync/dvsync/domain"
)

// Error is the Dataverse error body as a type; it lives in domain so that the classifier can
// read it without importing this package.
type Error = domain.DataverseError

// maxTextInStack bounds the request and response text kept for the call stack.
const maxTextInStack = 4096

// errorBody is Dataverse's {"error":{"code":"0x...","message":"...", "@Microsoft...": "..."}}.
type errorBody struct {
	Error map[string]json.RawMessage `json:"error"`
}

// parseError reads a Dataverse error response. It never fails: a body that is not Dataverse's
// JSON still gives the status and the text.
func parseError(resp *http.Response, body []byte, request string) *Error {
	e, _ := ParseErrorBody(resp.StatusCode, resp.Header, body)
	e.Request, e.Response = request, responseText(resp, body)
	return e
}

// ParseErrorBody reads Dataverse's error body {"error":{"code","message","@...annotations"}}.
// ok is false when the body is not that JSON; the error then carries the status and the text.
// Without a status (0), the ApiExceptionHttpStatusCode annotation gives it when present.
func ParseErrorBody(status int, header http.Header, body []byte) (e *Error, ok bool) {
	e = &Error{Status: status}
	var b errorBody
	if ok = json.Unmarshal(body, &b) == nil && b.Error != nil; ok {
		for k, raw := range b.Error {
			var s string
			if json.Unmarshal(raw, &s) != nil {
				s = string(raw)
			}
			switch k {
			case "code":
				e.Code = domain.NormalizeCode(s)
			case "message":
				e.Message = s
			default:
				if strings.HasPrefix(k, "@") {
					if e.Annotations == nil {
						e.Annotations = map[string]string{}
					}
					e.Annotations[k] = s
				}
			}
		}
	}
	if e.Status == 0 {
		e.Status, _ = strconv.Atoi(e.Annotations["@Microsoft.PowerApps.CDS.ErrorDetails.ApiExceptionHttpStatusCode"])
	}
	if e.Message == "" {
		e.Message = strings.TrimSpace(truncate(string(body), 300))
		if e.Message == "" {
			e.Message = http.StatusText(e.Status)
		}
	}
	if header != nil {
		e.RetryAfter = retryAfter(header.Get("Retry-After"))
	}
	return e, ok
}

// retryAfter reads Retry-After in seconds or as an HTTP date.
func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseFloat(v, 64); err == nil && secs >= 0 {
		return time.Duration(secs * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}

func responseText(resp *http.Response, body []byte) string {
	// Trimmed: a $batch part's body comes without the line end a whole answer's may have.
	return fmt.Sprintf("HTTP %d %s\n%s", resp.StatusCode, http.StatusText(resp.StatusCode), truncate(strings.TrimSpace(string(body)), maxTextInStack))
}

func truncate(s string, n int) string { return domain.Truncate(s, n) }
