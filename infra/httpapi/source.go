package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/natsjs"
	"github.com/dvsync/dvsync/infra/redact"
)

// SourceViewPath is the source view's route, and the source-link template that opens it: a
// server with Sources set serves it, and Links.SourceURL = <its address> + SourceViewPath points
// the page's source links at it.
const SourceViewPath = "/source/{table}/{key}"

// SourceFinder finds a record's newest change event for the source view (natsjs.ChangeFinder
// reads it from the changes stream).
type SourceFinder interface {
	Newest(ctx context.Context, table, key string) (natsjs.ChangeSearch, error)
}

// sourceView is what the source page shows of a record's newest change.
type sourceView struct {
	Table, Key string
	Found      bool
	Change     natsjs.Change
	Headers    []header
	Event      string // the change, redacted, indented when it is JSON
	// Note says how far the search looked when it found nothing, or that a newer change may exist.
	Note     string
	Coupling domain.Coupling
}

type header struct{ Name, Value string }

// sourcePage shows a record's newest change event in the changes stream (SourceFinder): in dev
// there is no source system to open, and the last change is what the source said.
func (s *Server) sourcePage(w http.ResponseWriter, r *http.Request, d pageData) {
	table, key := r.PathValue("table"), r.PathValue("key")
	if err := validText(r.PathValue, "table", "key"); err != nil || !domain.IsKnownTable(table) {
		http.Error(w, "There is no such source table.", http.StatusNotFound)
		return
	}
	res, err := s.Sources.Newest(r.Context(), table, key)
	if err != nil {
		s.logWarn("reading the changes stream", err)
		http.Error(w, "The changes stream could not be read; try again.", http.StatusServiceUnavailable)
		return
	}
	v := sourceView{Table: table, Key: key}
	if c, err := s.Ledger.Coupling(r.Context(), table, key); err == nil {
		v.Coupling = c
	}
	switch {
	case res.Found != nil:
		v.Found, v.Change = true, *res.Found
		v.Event = indented(redact.Body(res.Found.Data))
		for name, values := range redact.Headers(res.Found.Headers) {
			for _, value := range values {
				v.Headers = append(v.Headers, header{name, value})
			}
		}
		sort.Slice(v.Headers, func(i, j int) bool { return v.Headers[i].Name < v.Headers[j].Name })
		if !res.Complete {
			v.Note = "The search ran out of time before the newest changes: a newer change of this record may exist."
		}
	case !res.Complete:
		v.Note = fmt.Sprintf("Not found in the %d changes of %s read before the search ran out of time.", res.Read, table)
	case res.Windowed:
		v.Note = fmt.Sprintf("Not found in the newest %d changes of the stream; older ones were not searched.", res.Window)
	default:
		v.Note = "No change of this record is in the changes stream (changes are kept for the stream's max age)."
	}
	d.Title, d.Source = "Source record "+table+"/"+key, v
	status := http.StatusOK
	if !v.Found {
		status = http.StatusNotFound
	}
	s.renderStatus(w, status, "source.html", d)
}

// indented is JSON indented for reading, or the text as it is.
func indented(b []byte) string {
	var buf bytes.Buffer
	if json.Indent(&buf, b, "", "  ") == nil {
		return buf.String()
	}
	return string(b)
}
