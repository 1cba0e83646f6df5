package dataverse

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strconv"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
)

// BatchRequest is one request of a $batch. Path is relative to the Web API root
// ("accounts", "accounts(<id>)"); in a change set it may start with "$<n>", the n-th request.
type BatchRequest struct {
	Method string
	Path   string
	Body   domain.Attributes
	Header http.Header
}

// BatchResult is the answer to one request of a batch. Err is an *Error for an error answer, or
// ErrNotRun when an earlier failure stopped the batch first.
type BatchResult struct {
	Status int
	Header http.Header
	Body   []byte
	Err    error
}

// ErrNotRun marks the requests of a batch that Dataverse did not run because an earlier one failed.
var ErrNotRun = errors.New("dataverse: not run: an earlier request of the batch failed")

// BatchOptions shape a $batch.
type BatchOptions struct {
	// ChangeSet sends all requests (writes only) in one change set: all succeed or none does.
	ChangeSet bool
	// ContinueOnError asks Dataverse to run every top-level request whatever fails before it.
	ContinueOnError bool
}

// Batch sends up to 1000 requests in one $batch and returns one result per request, in order.
func (c *Client) Batch(ctx context.Context, reqs []BatchRequest, opt BatchOptions) ([]BatchResult, error) {
	if len(reqs) == 0 || len(reqs) > 1000 {
		return nil, fmt.Errorf("dataverse: a batch holds 1 to 1000 requests, not %d", len(reqs))
	}
	var body bytes.Buffer
	bw := multipart.NewWriter(&body)
	_ = bw.SetBoundary("batch_" + uuid.NewString())
	if opt.ChangeSet {
		var cs bytes.Buffer
		cw := multipart.NewWriter(&cs)
		_ = cw.SetBoundary("changeset_" + uuid.NewString())
		for i, r := range reqs {
			if err := c.writeBatchPart(cw, r, i+1); err != nil {
				return nil, err
			}
		}
		_ = cw.Close()
		pw, _ := bw.CreatePart(textproto.MIMEHeader{"Content-Type": {"multipart/mixed; boundary=" + cw.Boundary()}})
		_, _ = pw.Write(cs.Bytes())
	} else {
		for _, r := range reqs {
			if err := c.writeBatchPart(bw, r, 0); err != nil {
				return nil, err
			}
		}
	}
	_ = bw.Close()
	hdr := http.Header{}
	if opt.ContinueOnError {
		hdr.Set("Prefer", "odata.continue-on-error")
	}
	resp, err := c.send(ctx, http.MethodPost, "$batch", "$batch", body.Bytes(), "multipart/mixed; boundary="+bw.Boundary(), hdr)
	if err != nil {
		return nil, err
	}
	answers, err := readBatchResponse(resp)
	if err != nil {
		return nil, err
	}
	results := make([]BatchResult, len(reqs))
	switch {
	case opt.ChangeSet && len(answers) == 1 && len(reqs) > 1:
		// A failed change set answers its failure alone; none of its requests took effect.
		for i := range results {
			results[i] = answers[0]
		}
	default:
		for i := range results {
			if i < len(answers) {
				results[i] = answers[i]
			} else {
				results[i] = BatchResult{Err: ErrNotRun}
			}
		}
	}
	return results, nil
}

func (c *Client) writeBatchPart(w *multipart.Writer, r BatchRequest, contentID int) error {
	h := textproto.MIMEHeader{"Content-Type": {"application/http"}, "Content-Transfer-Encoding": {"binary"}}
	if contentID > 0 {
		h.Set("Content-ID", strconv.Itoa(contentID))
	}
	pw, err := w.CreatePart(h)
	if err != nil {
		return err
	}
	path := r.Path
	if len(path) == 0 || path[0] != '$' {
		path = APIPath + path
	}
	fmt.Fprintf(pw, "%s %s HTTP/1.1\r\n", r.Method, path)
	extra := r.Header
	if r.Method != http.MethodGet {
		extra = mergeHeaders(c.writeHeaders, extra)
	}
	// Each part carries what the request would carry alone: a part's error then has its
	// annotations too, whatever Dataverse does with the outer request's preferences.
	hdr := http.Header{}
	setRequestHeaders(hdr, extra)
	for k, vs := range hdr {
		for _, v := range vs {
			fmt.Fprintf(pw, "%s: %s\r\n", k, v)
		}
	}
	if r.Body != nil {
		payload, err := json.Marshal(r.Body)
		if err != nil {
			return fmt.Errorf("dataverse: encode batch body of %s: %w", r.Path, err)
		}
		fmt.Fprintf(pw, "Content-Type: application/json; type=entry\r\n\r\n%s\r\n", payload)
		return nil
	}
	_, err = io.WriteString(pw, "\r\n")
	return err
}

// readBatchResponse reads every application/http part of a batch answer, change sets flattened.
func readBatchResponse(resp *response) ([]BatchResult, error) {
	_, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || params["boundary"] == "" {
		return nil, fmt.Errorf("dataverse: $batch answered %q, not multipart/mixed", resp.Header.Get("Content-Type"))
	}
	var out []BatchResult
	var walk func(io.Reader, string) error
	walk = func(r io.Reader, boundary string) error {
		mr := multipart.NewReader(r, boundary)
		for {
			part, err := mr.NextPart()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return fmt.Errorf("dataverse: reading $batch answer: %w", err)
			}
			if ct, cp, _ := mime.ParseMediaType(part.Header.Get("Content-Type")); ct == "multipart/mixed" {
				if err := walk(part, cp["boundary"]); err != nil {
					return err
				}
				continue
			}
			r, err := http.ReadResponse(bufio.NewReader(part), nil)
			if err != nil {
				return fmt.Errorf("dataverse: a $batch part is not an HTTP response: %w", err)
			}
			body, _ := io.ReadAll(r.Body)
			res := BatchResult{Status: r.StatusCode, Header: r.Header, Body: bytes.TrimSpace(body)}
			if r.StatusCode >= 400 {
				res.Err = parseError(r, res.Body, "$batch part")
			}
			out = append(out, res)
		}
	}
	return out, walk(bytes.NewReader(resp.body), params["boundary"])
}
