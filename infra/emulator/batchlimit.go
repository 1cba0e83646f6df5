package emulator

import (
	"bytes"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
)

// maxBatchRequests is the most requests a $batch may hold, change sets' requests included:
// "Batch requests can contain up to 1,000 individual requests and can't contain other batch
// requests." https://learn.microsoft.com/power-apps/developer/data-platform/webapi/execute-batch-operations-using-web-api
const maxBatchRequests = 1000

// checkBatchSize counts the requests of a $batch before any runs, so that a batch over the limit
// changes nothing. The status is the documented one for a bad request; the message and code are
// not confirmed against a real response.
func checkBatchSize(r *http.Request, boundary string) *apiError {
	body, err := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil {
		return nil // serveBatch reports an unreadable body
	}
	n := countParts(multipart.NewReader(bytes.NewReader(body), boundary))
	if n > maxBatchRequests {
		return errBadRequest(fmt.Sprintf("The number of requests in the batch (%d) exceeds the maximum of %d.", n, maxBatchRequests))
	}
	return nil
}

// countParts counts the requests of a multipart body, descending into change sets.
func countParts(mr *multipart.Reader) int {
	n := 0
	for {
		part, err := mr.NextPart()
		if err != nil {
			return n
		}
		if ct, cp, _ := mime.ParseMediaType(part.Header.Get("Content-Type")); ct == "multipart/mixed" && cp["boundary"] != "" {
			n += countParts(multipart.NewReader(part, cp["boundary"]))
			continue
		}
		n++
	}
}
