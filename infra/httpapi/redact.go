package httpapi

import (
	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/redact"
	"github.com/dvsync/dvsync/infra/storage"
)

// What the API and the page show of a stored error is redacted (infra/redact): change events
// come from publishers and may carry credentials that no viewer should read. The ledger keeps
// the bytes intact, since a replay sends them again.

// redactError returns what may be shown of a stored error; e itself is not changed.
func redactError(e storage.StoredError) storage.StoredError {
	e.Message = redact.Text(e.Message)
	if e.DataverseMessage != nil {
		m := redact.Text(*e.DataverseMessage)
		e.DataverseMessage = &m
	}
	if e.Details != nil {
		details := make(map[string]string, len(e.Details))
		for k, v := range e.Details {
			if redact.SecretName(k) {
				details[k] = redact.Redacted
			} else {
				details[k] = redact.Text(v)
			}
		}
		e.Details = details
	}
	if e.CallStack != nil {
		stack := make([]domain.Stage, len(e.CallStack))
		for i, st := range e.CallStack {
			st.Detail, st.Request, st.Response = redact.Text(st.Detail), redact.Text(st.Request), redact.Text(st.Response)
			stack[i] = st
		}
		e.CallStack = stack
	}
	e.Event = redact.Body(e.Event)
	return e
}

func redactDetail(d storage.ErrorDetail) storage.ErrorDetail {
	d.StoredError = redactError(d.StoredError)
	d.EventHeaders = redact.Headers(d.EventHeaders)
	return d
}

func redactErrors(list []storage.StoredError) []storage.StoredError {
	out := make([]storage.StoredError, len(list))
	for i, e := range list {
		out[i] = redactError(e)
	}
	return out
}
