package emulator

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"regexp"
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// serveBatch runs a multipart/mixed $batch: top-level requests in order, change sets atomically
// (all or nothing, with Content-ID references), stopping at the first failure unless the client
// prefers odata.continue-on-error. The caller holds e.mu.
func (e *Emulator) serveBatch(w http.ResponseWriter, r *http.Request, u *user) {
	mediaType, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mediaType != "multipart/mixed" || params["boundary"] == "" {
		writeError(w, r, errBadRequest("The batch request must have a multipart/mixed Content-Type with a boundary."))
		return
	}
	if err := checkBatchSize(r, params["boundary"]); err != nil {
		writeError(w, r, err)
		return
	}
	continueOnError := strings.Contains(strings.Join(r.Header.Values("Prefer"), ","), "odata.continue-on-error")
	var out bytes.Buffer
	mw := multipart.NewWriter(&out)
	_ = mw.SetBoundary("batchresponse_" + uuid.NewString())
	status, records := http.StatusOK, 0
	mr := multipart.NewReader(r.Body, params["boundary"])
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			writeError(w, r, errBadRequest("The batch body could not be read: "+err.Error()))
			return
		}
		var failed *httptest.ResponseRecorder
		var n int
		if ct, cp, _ := mime.ParseMediaType(part.Header.Get("Content-Type")); ct == "multipart/mixed" {
			failed, n = e.changeSet(mw, r, u, multipart.NewReader(part, cp["boundary"]))
		} else {
			var rec *httptest.ResponseRecorder
			rec, n = e.inner(r, u, part, nil)
			writeResponsePart(mw, rec, "")
			if rec.Code >= 400 {
				failed = rec
			}
		}
		records += n
		if failed != nil && !continueOnError {
			status = failed.Code
			break
		}
	}
	_ = mw.Close()
	w.Header().Set(recordsHeader, strconv.Itoa(records))
	w.Header().Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
	w.Header().Set("OData-Version", "4.0")
	if continueOnError {
		w.Header().Set("Preference-Applied", "odata.continue-on-error")
	}
	w.WriteHeader(status)
	_, _ = w.Write(out.Bytes())
}

// changeSet runs the requests of one change set; on the first failure it restores every row it
// wrote and answers that failure alone. It returns the failure, or nil, and the records its
// requests carried.
func (e *Emulator) changeSet(mw *multipart.Writer, outer *http.Request, u *user, mr *multipart.Reader) (failed *httptest.ResponseRecorder, records int) {
	mark := e.begin()
	defer func() { e.end(mark, failed == nil) }()
	refs := map[string]string{} // Content-ID -> entity path
	type done struct {
		rec *httptest.ResponseRecorder
		id  string
	}
	var results []done
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			rec := httptest.NewRecorder()
			writeError(rec, outer, errBadRequest("The change set could not be read: "+err.Error()))
			writeResponsePart(mw, rec, "")
			return rec, max(records, 1)
		}
		id := part.Header.Get("Content-ID")
		rec, n := e.inner(outer, u, part, refs)
		records += n
		if rec.Code >= 400 {
			writeResponsePart(mw, rec, id)
			return rec, records
		}
		if loc := rec.Header().Get("OData-EntityId"); id != "" && loc != "" {
			if i := strings.Index(loc, apiPath); i >= 0 {
				refs["$"+id] = "/" + loc[i+len(apiPath):]
			}
		}
		results = append(results, done{rec, id})
	}
	var body bytes.Buffer
	cw := multipart.NewWriter(&body)
	_ = cw.SetBoundary("changesetresponse_" + uuid.NewString())
	for _, d := range results {
		writeResponsePart(cw, d.rec, d.id)
	}
	_ = cw.Close()
	h := textproto.MIMEHeader{"Content-Type": {"multipart/mixed; boundary=" + cw.Boundary()}}
	pw, _ := mw.CreatePart(h)
	_, _ = pw.Write(body.Bytes())
	return nil, records
}

var requestLine = regexp.MustCompile(`^([A-Z]+) (\S+) (HTTP/1\.[01])\r?\n`)

// inner runs one request of a batch and returns its answer and the records it carried (a bulk
// action's targets; one otherwise), as the latency model counts them. Content-ID references ($1)
// in its URL and body are replaced by the rows they name.
func (e *Emulator) inner(outer *http.Request, u *user, part io.Reader, refs map[string]string) (*httptest.ResponseRecorder, int) {
	rec := e.innerRequest(outer, u, part, refs)
	records := max(1, atoiOr(rec.Header().Get(recordsHeader), 1))
	rec.Header().Del(recordsHeader)
	return rec, records
}

func (e *Emulator) innerRequest(outer *http.Request, u *user, part io.Reader, refs map[string]string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	raw, err := io.ReadAll(part)
	if err != nil {
		writeError(rec, outer, errBadRequest("A batch part could not be read."))
		return rec
	}
	m := requestLine.FindSubmatch(raw)
	if m == nil {
		writeError(rec, outer, errBadRequest("A batch part is not an HTTP request."))
		return rec
	}
	target := string(m[2])
	if i := strings.Index(target, apiPath); i >= 0 { // absolute URL or absolute path
		target = target[i:]
	} else if ref, rest, ok := strings.Cut(target, "/"); ok && refs[ref] != "" {
		target = apiPath + strings.TrimPrefix(refs[ref], "/") + "/" + rest
	} else if refs[target] != "" {
		target = apiPath + strings.TrimPrefix(refs[target], "/")
	} else {
		target = apiPath + strings.TrimPrefix(target, "/")
	}
	// Headers end at the first blank line; the body runs to the part boundary (parts carry no
	// Content-Length).
	head, body := splitHeaders(raw[len(m[0]):])
	for ref, path := range refs {
		body = bytes.ReplaceAll(body, []byte(`"`+ref+`"`), []byte(`"`+path+`"`))
	}
	req, err := http.ReadRequest(bufio.NewReader(io.MultiReader(
		strings.NewReader(fmt.Sprintf("%s %s %s\r\nHost: %s\r\n", m[1], target, m[3], outer.Host)),
		bytes.NewReader(bytes.TrimRight(head, "\r\n")), strings.NewReader("\r\n\r\n"))))
	if err != nil {
		writeError(rec, outer, errBadRequest("A batch part is not an HTTP request: "+err.Error()))
		return rec
	}
	if req.Method == http.MethodGet && refs != nil {
		writeError(rec, outer, errBadRequest("GET requests are not allowed in a change set."))
		return rec
	}
	req.Body = io.NopCloser(bytes.NewReader(bytes.TrimRight(body, "\r\n")))
	req.Header.Set("Authorization", outer.Header.Get("Authorization"))
	if p := outer.Header.Values("Prefer"); len(p) > 0 && req.Header.Get("Prefer") == "" {
		req.Header["Prefer"] = p
	}
	e.dispatch(rec, req.WithContext(outer.Context()), u)
	return rec
}

// writeResponsePart writes a recorded response as an application/http part.
func writeResponsePart(mw *multipart.Writer, rec *httptest.ResponseRecorder, contentID string) {
	h := textproto.MIMEHeader{"Content-Type": {"application/http"}, "Content-Transfer-Encoding": {"binary"}}
	if contentID != "" {
		h.Set("Content-ID", contentID)
	}
	pw, _ := mw.CreatePart(h)
	fmt.Fprintf(pw, "HTTP/1.1 %d %s\r\n", rec.Code, http.StatusText(rec.Code))
	// Dataverse's parts carry the headers of a single answer, and Location beside OData-EntityId.
	rec.Header().Set("OData-Version", "4.0")
	if loc := rec.Header().Get("OData-EntityId"); loc != "" {
		rec.Header().Set("Location", loc)
	}
	rec.Header().Set("REQ_ID", uuid.NewString())
	_ = rec.Header().Write(pw)
	fmt.Fprint(pw, "\r\n")
	_, _ = pw.Write(rec.Body.Bytes())
}

// splitHeaders splits a batch part's request after its request line into headers and body at the
// first blank line; the body runs to the part boundary, as parts carry no Content-Length.
func splitHeaders(b []byte) (head, body []byte) {
	for _, blank := range []string{"\r\n", "\n"} {
		if bytes.HasPrefix(b, []byte(blank)) { // no headers at all
			return nil, b[len(blank):]
		}
	}
	i, n := bytes.Index(b, []byte("\r\n\r\n")), 4
	if j := bytes.Index(b, []byte("\n\n")); j >= 0 && (i < 0 || j < i) {
		i, n = j, 2
	}
	if i < 0 {
		return b, nil
	}
	return b[:i], b[i+n:]
}
