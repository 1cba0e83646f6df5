package domain

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
)

// DataverseError is what Dataverse answered to a failed request, as the classifier and the
// errors ledger need it. The Dataverse client returns it (wrapped) for every error response.
type DataverseError struct {
	Status      int               `json:"status"`
	Code        string            `json:"code,omitempty"` // "0x80040217", lower case
	Message     string            `json:"message"`
	Annotations map[string]string `json:"annotations,omitempty"`
	RetryAfter  time.Duration     `json:"retry_after,omitempty"`
	// Request and Response are the failed call as text for the call stack, without credentials.
	Request  string `json:"request,omitempty"`
	Response string `json:"response,omitempty"`
}

func (e *DataverseError) Error() string {
	if e.Code != "" && e.Code != "0x0" {
		return fmt.Sprintf("dataverse: HTTP %d %s: %s", e.Status, e.Code, e.Message)
	}
	return fmt.Sprintf("dataverse: HTTP %d: %s", e.Status, e.Message)
}

// NormalizeCode lower-cases a Dataverse hex code so that "0x8006088A" and "0x8006088a" compare equal.
func NormalizeCode(code string) string { return strings.ToLower(strings.TrimSpace(code)) }

// MessageName is the symbolic exception name Dataverse sends when annotations are asked for
// (the older key is misspelt "Mesage").
func (e *DataverseError) MessageName() string {
	for _, k := range []string{
		"@Microsoft.PowerApps.CDS.ErrorDetails.ApiExceptionMessageName",
		"@Microsoft.PowerApps.CDS.ErrorDetails.ApiExceptionMesageName",
	} {
		if v := e.Annotations[k]; v != "" {
			return v
		}
	}
	return ""
}

// ErrDataverseUnreachable marks a request that got no HTTP answer (connection refused, reset,
// timeout); the client wraps the transport error with it.
var ErrDataverseUnreachable = fmt.Errorf("dataverse unreachable")

// RowRef names one Dataverse row by entity set and primary id.
type RowRef struct {
	EntitySet string
	ID        uuid.UUID
}

func (r RowRef) String() string { return fmt.Sprintf("%s(%s)", r.EntitySet, r.ID) }

// Attributes is the body of a Dataverse write: attribute values and "<nav>@odata.bind" lookups.
type Attributes map[string]any

// Dataverse is the port the sync needs from the Dataverse Web API.
type Dataverse interface {
	// UpsertRow creates the row with the given id or updates it when it exists.
	UpsertRow(ctx context.Context, row RowRef, attrs Attributes) error
	// UpdateRow updates an existing row; a missing row is a DataverseError with status 404.
	UpdateRow(ctx context.Context, row RowRef, attrs Attributes) error
	// DeleteRow deletes a row; a missing row is a DataverseError with status 404.
	DeleteRow(ctx context.Context, row RowRef) error
	// FindRowID returns the id of the first row of the entity set that matches an OData filter.
	FindRowID(ctx context.Context, entitySet, idAttribute, filter string) (uuid.UUID, bool, error)
}
