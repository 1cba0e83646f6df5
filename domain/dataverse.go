package domain

import (
	"context"
	"errors"
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

// RowRef names one Dataverse row by entity set and primary id. IDAttribute, when known, is the
// primary id's column: writes ask for it alone when they read the row's new version back.
type RowRef struct {
	EntitySet   string
	ID          uuid.UUID
	IDAttribute string
}

func (r RowRef) String() string { return fmt.Sprintf("%s(%s)", r.EntitySet, r.ID) }

// Attributes is the body of a Dataverse write: attribute values and "<nav>@odata.bind" lookups.
type Attributes map[string]any

// AnyVersion, as the version a write is conditioned on, matches whatever version the row has
// (If-Match: *): for couplings recorded before dvsync kept row versions.
const AnyVersion = ""

// Dataverse is the port the sync needs from the Dataverse Web API. Every write is conditional,
// so that a write dvsync stopped waiting for, which Dataverse may still carry out later, can
// never overwrite a newer one: a create succeeds only while the row does not exist, an update
// or delete only while the row still has the version dvsync wrote last. Writes return the row's
// new version (its ETag) for the next write to be conditioned on.
type Dataverse interface {
	// CreateRow creates the row with the given id; an existing row is a DataverseError with
	// status 412 (IsAlreadyExists).
	CreateRow(ctx context.Context, row RowRef, attrs Attributes) (version string, err error)
	// UpdateRow updates an existing row whose version is still ifMatch (AnyVersion: any); a
	// missing row is a DataverseError with status 404, a changed version one with status 412
	// (IsVersionMismatch).
	UpdateRow(ctx context.Context, row RowRef, attrs Attributes, ifMatch string) (version string, err error)
	// DeleteRow deletes a row whose version is still ifMatch; missing and changed rows fail as
	// UpdateRow's do.
	DeleteRow(ctx context.Context, row RowRef, ifMatch string) error
	// RowVersion reads a row's current version; found is false when the row does not exist.
	RowVersion(ctx context.Context, row RowRef) (version string, found bool, err error)
	// FindRowID returns the id of the first row of the entity set that matches an OData filter.
	FindRowID(ctx context.Context, entitySet, idAttribute, filter string) (uuid.UUID, bool, error)
	// FindRows returns at most q.Top rows of q.EntitySet whose attributes equal q.Values (all of
	// them), for match-based coupling; a port may send the lookups of many records together.
	FindRows(ctx context.Context, q MatchQuery) ([]FoundRow, error)
}

// Dataverse's codes for the two ways a conditional write is refused (both HTTP 412).
const (
	codeVersionMismatch = "0x80060882" // ConcurrencyVersionMismatch: If-Match named another version
	codeAlreadyExists   = "0x80040237" // DuplicateRecord: If-None-Match: * found the row
)

// IsVersionMismatch reports whether err is Dataverse refusing a write because the row's version
// is no longer the one it was conditioned on.
func IsVersionMismatch(err error) bool { return is412(err, codeVersionMismatch) }

// IsAlreadyExists reports whether err is Dataverse refusing a create because the row exists.
func IsAlreadyExists(err error) bool { return is412(err, codeAlreadyExists) }

func is412(err error, code string) bool {
	var dv *DataverseError
	return errors.As(err, &dv) && dv.Status == 412 && NormalizeCode(dv.Code) == code
}
