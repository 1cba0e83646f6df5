package emulator

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strings"

	"github.com/google/uuid"
)

// apiError is one Dataverse error answer: status, hex code, message and the symbolic name sent
// as an annotation when the client asks for annotations.
type apiError struct {
	status int
	code   string
	msg    string
	name   string // ApiExceptionMessageName
}

func (a *apiError) Error() string { return a.msg }

// The error forms below are Dataverse's (see shared/reference/dataverse-webapi.md).

func errNotFound(ent *Entity, id uuid.UUID) *apiError {
	return &apiError{404, "0x80040217", fmt.Sprintf("%s With Id = %s Does Not Exist", ent.LogicalName, id), "ObjectDoesNotExist"}
}

func errBoundNotFound(ent *Entity, id uuid.UUID) *apiError {
	return &apiError{404, "0x80040217", fmt.Sprintf("Entity '%s' With Id = %s Does Not Exist", ent.LogicalName, id), "ObjectDoesNotExist"}
}

func errKeyNotFound(ent *Entity) *apiError {
	return &apiError{404, "0x80060891", fmt.Sprintf("A record with the specified key values does not exist in %s entity", ent.LogicalName), "RecordNotFoundByEntityKey"}
}

func errNoProperty(ent *Entity, name string) *apiError {
	return &apiError{400, "0x0", fmt.Sprintf("Could not find a property named '%s' on type 'Microsoft.Dynamics.CRM.%s'.", name, ent.LogicalName), ""}
}

func errUndeclaredNav(name string) *apiError {
	return &apiError{400, "0x0", fmt.Sprintf("An undeclared property '%s' which only has property annotations in the payload but no property value was found in the payload. In OData, only declared navigation properties and declared named streams can be represented as properties without values.", name), ""}
}

func errConvert(edm string) *apiError {
	return &apiError{400, "0x0", fmt.Sprintf("Cannot convert a primitive value to the expected type '%s'. See the inner exception for more details.", edm), ""}
}

func errBadBind(value, nav string) *apiError {
	return &apiError{400, "0x80090800", fmt.Sprintf("Invalid url value '%s' for lookup property '%s'.", value, nav), "InvalidUrlForODataBindProperty"}
}

func errTooLong(ent *Entity, attr string, max int) *apiError {
	return &apiError{400, "0x80044331", fmt.Sprintf("A validation error occurred.  The length of the '%s' attribute of the '%s' entity exceeded the maximum allowed length of '%d'.", attr, ent.LogicalName, max), "StringLengthTooLong"}
}

func errPicklist() *apiError {
	return &apiError{400, "0x8004431a", "The picklist value is out of the range.", "PicklistValueOutOfRange"}
}

func errDuplicateID() *apiError {
	return &apiError{412, "0x80040237", "A record with matching key values already exists.", "DuplicateRecord"}
}

func errDuplicateKey(ent *Entity, key []string) *apiError {
	return &apiError{412, "0x80060892", fmt.Sprintf("Entity Key %s Key violated. A record with the same value for %s already exists. A duplicate record cannot be created. Select one or more unique values and try again.", ent.LocalizedName, strings.Join(key, ", ")), "DuplicateRecordEntityKey"}
}

func errVersionMismatch() *apiError {
	return &apiError{412, "0x80060882", "The version of the existing record doesn't match the RowVersion property provided.", "ConcurrencyVersionMismatch"}
}

// errSegment is the 404 of an unknown entity set or path segment, with the code the Web API sends
// (0x80060888 in published responses; Power Automate shows 0x8006088a for the same message).
func errSegment(seg string) *apiError {
	return &apiError{404, "0x80060888", fmt.Sprintf("Resource not found for the segment '%s'.", seg), "CrmHttpError"}
}

func errBadKey(ent *Entity) *apiError {
	return &apiError{400, "0x0", fmt.Sprintf("The key in the request URI is not valid for resource 'Microsoft.Dynamics.CRM.%s'. Ensure that the names and number of key properties match the declared or alternate key properties for the resource 'Microsoft.Dynamics.CRM.%s'.", ent.LogicalName, ent.LogicalName), ""}
}

func errBadRequest(msg string) *apiError { return &apiError{400, "0x0", msg, ""} }

func errUserDisabled() *apiError {
	return &apiError{403, "0x80040225", "The specified user is either disabled or is not a member of any business unit.", "UnManagedIdsUserNotEnabled"}
}

// errPrivilege is the current form of Dataverse's missing-privilege message (403, 0x80040220).
func (e *Emulator) errPrivilege(u *user, privilege string, ent *Entity) *apiError {
	msg := fmt.Sprintf("Principal user (Id=%s, type=8, roleCount=1, privilegeCount=%d, accessMode='4 Non-interactive', "+
		"AADObjectId='%s', MetadataCachePrivilegesCount=%d, businessUnitId=%s), is missing %s privilege (Id=%s) on OTC=%d "+
		"for entity '%s' (LocalizedName='%s'). context.Caller=%s. Consider adding missed privilege to one of the principal (user/team) roles.",
		u.id, len(u.privileges), u.aadObject, len(e.entities)*len(Verbs), e.businessUnit, privilege, e.privilegeID(privilege),
		ent.TypeCode, ent.LogicalName, ent.LocalizedName, u.id)
	return &apiError{403, "0x80040220", msg, "PrivilegeDenied"}
}

const annotationPrefix = "@Microsoft.PowerApps.CDS."

func writeError(w http.ResponseWriter, r *http.Request, a *apiError) {
	body := map[string]any{"code": a.code, "message": a.msg}
	if patterns := includeAnnotations(r); patterns != nil && a.name != "" {
		category := "ClientError"
		if a.status >= 500 {
			category = "SystemFailure"
		}
		// Only the terms the preference names ("*", "Microsoft.PowerApps.CDS.*", or one by one).
		set := func(term string, v string) {
			if wanted(patterns, strings.TrimPrefix(annotationPrefix, "@")+term) {
				body[annotationPrefix+term] = v
			}
		}
		set("ErrorDetails.ApiExceptionCategory", category)
		set("ErrorDetails.ApiExceptionMessageName", a.name)
		set("ErrorDetails.ApiExceptionHttpStatusCode", fmt.Sprint(a.status))
		set("HelpLink", "http://go.microsoft.com/fwlink/?LinkID=398563&error=Microsoft.Crm.CrmException%3a"+
			strings.TrimPrefix(a.code, "0x")+"&client=platform")
	}
	writeJSON(w, a.status, map[string]any{"error": body})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; odata.metadata=minimal")
	w.Header().Set("OData-Version", "4.0")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// errDuplicateDetected is duplicate detection's answer; Dataverse sends it with HTTP 500.
func errDuplicateDetected() *apiError {
	return &apiError{500, "0x80040333", "A record was not created or updated because a duplicate of the current record already exists.", "DuplicateRecordsFound"}
}

// checkRange applies an attribute's minimum and maximum. Dataverse answers 0x8004432F for whole
// numbers and 0x80044330 for decimals and money; the message text here is not confirmed against
// a real response.
func checkRange(ent *Entity, a Attribute, v any) *apiError {
	f, ok := toFloat(v)
	if !ok {
		return nil
	}
	lo, hi := math.Inf(-1), math.Inf(1)
	if a.MinValue != nil {
		lo = *a.MinValue
	}
	if a.MaxValue != nil {
		hi = *a.MaxValue
	}
	if f >= lo && f <= hi {
		return nil
	}
	code, name := "0x80044330", "DecimalValueOutOfRange"
	if a.Type == Integer {
		code, name = "0x8004432f", "IntegerValueOutOfRange"
	}
	return &apiError{400, code, fmt.Sprintf("A validation error occurred. The value %v of '%s' on record of type '%s' is outside the valid range. Accepted range: %v to %v",
		v, a.Name, ent.LogicalName, lo, hi), name}
}

func errNoRoles(u *user) *apiError {
	return &apiError{403, "0x80042f09", fmt.Sprintf("The user (Id = %s) has not been assigned any roles.", u.id), "UserNotAssignedRoles"}
}
