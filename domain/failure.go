package domain

import (
	"fmt"
	"maps"
	"time"
	"unicode/utf8"
)

// Class says who can fix a failure.
type Class string

const (
	ClassCoupling  Class = "coupling"  // the user fixes the record or its dependency
	ClassSetup     Class = "setup"     // the administrator fixes the integration's setup
	ClassTransient Class = "transient" // nobody: retried
)

// Kind names a failure within its class.
type Kind string

const (
	KindDependencyNotCoupled Kind = "dependency_not_coupled"
	KindDestinationDeleted   Kind = "destination_deleted"
	KindSourceDeleted        Kind = "source_deleted"
	KindDuplicateRecord      Kind = "duplicate_record"
	KindUpdateConflict       Kind = "update_conflict"
	KindInvalidData          Kind = "invalid_data"
	KindNoMatch              Kind = "no_match"         // match-based coupling found no row, and may not create one
	KindMultipleMatches      Kind = "multiple_matches" // match-based coupling found several rows
	KindAlreadyCoupled       Kind = "already_coupled"  // the one match is coupled to another record
	// KindStateConflict is a write Dataverse refuses because of the row's state (closed,
	// resolved, inactive, read-only, or its parent is): the user reopens the row or stops
	// changing the record.
	KindStateConflict Kind = "state_conflict"
	// KindDeleteBlocked is a delete Dataverse refuses because other rows refer to the row
	// (a restrict relationship).
	KindDeleteBlocked Kind = "delete_blocked"

	KindMissingPrivilege     Kind = "missing_privilege"
	KindAuthentication       Kind = "authentication"
	KindUserDisabled         Kind = "user_disabled_or_unlicensed"
	KindSchemaMismatch       Kind = "schema_mismatch"
	KindOptionValueMissing   Kind = "option_value_missing"
	KindMappingMissing       Kind = "mapping_missing"
	KindInvalidEvent         Kind = "invalid_event"
	KindDataverseUnavailable Kind = "dataverse_unavailable"
	KindUnknown              Kind = "unknown"

	KindCustomLogic Kind = "custom_logic" // a plug-in or business process rejected the write

	// KindAppRestricted is an application an administrator restricted from the Dataverse API:
	// no privilege is missing.
	KindAppRestricted Kind = "app_restricted"
	// KindCurrencySetup is a source currency that cannot couple to Dataverse's currencies: the
	// source's local currency is not the base currency, or a coupled currency is inactive.
	KindCurrencySetup Kind = "currency_setup"

	KindThrottled   Kind = "throttled"
	KindServerError Kind = "server_error"
	KindNetwork     Kind = "network"
	KindTimeout     Kind = "timeout"
	KindInternal    Kind = "internal" // a failure inside dvsync (its database, most often)
)

// Stage is one step a message went through, kept as the error's call stack.
type Stage struct {
	Name     string    `json:"name"`
	At       time.Time `json:"at"`
	Detail   string    `json:"detail,omitempty"`
	Request  string    `json:"request,omitempty"`
	Response string    `json:"response,omitempty"`
}

// Failure is a sync failure sorted for the person who can fix it. It is an error so that it
// travels through error chains; check it with errors.As.
type Failure struct {
	Class      Class             `json:"class"`
	Kind       Kind              `json:"kind"`
	Message    string            `json:"message"`
	Resolution string            `json:"resolution"`
	Details    map[string]string `json:"details,omitempty"`
	Dataverse  *DataverseError   `json:"dataverse,omitempty"`
	// RetryAfter is the least wait before a transient failure is tried again (Dataverse's
	// Retry-After), zero when it gave none.
	RetryAfter time.Duration `json:"-"`
	// unclassified marks the classifier's fallback: no rule knew the Dataverse error.
	unclassified bool
}

func (f *Failure) Error() string { return fmt.Sprintf("%s/%s: %s", f.Class, f.Kind, f.Message) }

// Unwrap exposes the Dataverse error so errors.As finds it through the failure.
func (f *Failure) Unwrap() error {
	if f.Dataverse == nil {
		return nil
	}
	return f.Dataverse
}

// Unclassified reports whether no rule of the classifier knew the Dataverse error: the failure is
// the safe fallback (setup/unknown with the raw message), counted so that operators see how often
// the classifier lacks a rule. It is not kept in error events: it is known where the worker
// classifies.
func (f *Failure) Unclassified() bool { return f.unclassified }

// Transient reports whether the failure heals by itself and must be retried, not reported.
func (f *Failure) Transient() bool { return f.Class == ClassTransient }

// InvalidEvent is the setup failure for an event that breaks the contract. The reason is one
// sentence the publisher can act on.
func InvalidEvent(reason string) *Failure {
	return &Failure{
		Class:      ClassSetup,
		Kind:       KindInvalidEvent,
		Message:    "The change event was rejected: " + reason + ".",
		Resolution: "Fix the publisher so that it sends CloudEvents 1.0 with data {table, key, version, fields} as documented, then replay the event.",
		Details:    map[string]string{"reason": reason},
	}
}

// DependencyNotCoupled is the coupling failure for a lookup whose record is not coupled yet,
// worded as Business Central words it ("Currency Code EUR must be coupled to a record in Dataverse").
func DependencyNotCoupled(ev ChangeEvent, l Lookup, value string) *Failure {
	return &Failure{
		Class: ClassCoupling,
		Kind:  KindDependencyNotCoupled,
		Message: fmt.Sprintf("%s cannot be synchronized: %s %s must be coupled to a record in Dataverse.",
			ev.Ref(), l.caption(), value),
		Resolution: fmt.Sprintf("Couple %s %s first (synchronize it, or %s it to an existing Dataverse row: %s); then retry %s.",
			l.Table, value, ActionCouple.Button, ActionCouple.CLI(l.Table, value, "ROW"), ev.Ref()),
		Details: map[string]string{"field": l.Source, "dependency_table": l.Table, "dependency_key": value},
	}
}

// DestinationDeleted is the coupling failure for a coupled Dataverse row that no longer exists.
func DestinationDeleted(ev ChangeEvent, m Mapping, row NamedRow, dv *DataverseError) *Failure {
	return &Failure{
		Class:   ClassCoupling,
		Kind:    KindDestinationDeleted,
		Message: fmt.Sprintf("The %s record cannot be updated because it is coupled to a deleted record (%s).", ev.Ref(), row),
		Resolution: fmt.Sprintf("%s: %s or %s; set the mapping's onDestinationDeleted to restore or uncouple to do this automatically.",
			rowDeletedActions, ActionRestore.CLI(ev.Table, ev.Key), ActionDeleteCoupling.CLI(ev.Table, ev.Key)),
		Details:   rowDetails(m, row),
		Dataverse: dv,
	}
}

// SourceDeleted is the coupling failure for a record deleted at the source whose mapping says to
// report it rather than act.
func SourceDeleted(ev ChangeEvent, m Mapping, row NamedRow) *Failure {
	return &Failure{
		Class:   ClassCoupling,
		Kind:    KindSourceDeleted,
		Message: fmt.Sprintf("%s was deleted in the source but is still coupled to %s.", ev.Ref(), row),
		Resolution: fmt.Sprintf("Delete or deactivate the Dataverse row, or choose %s on the error's page (%s).",
			ActionDeleteCoupling.Button, ActionDeleteCoupling.CLI(ev.Table, ev.Key)),
		Details: rowDetails(m, row),
	}
}

// rowDetails are the details that name a failure's Dataverse row: row_name only when known.
func rowDetails(m Mapping, row NamedRow) map[string]string {
	d := map[string]string{"entity": m.Entity, "row_id": row.ID.String()}
	if row.Name != "" {
		d["row_name"] = row.Name
	}
	return d
}

// MappingMissing is the setup failure for an event of a table that no mapping covers.
func MappingMissing(table string) *Failure {
	return &Failure{
		Class:      ClassSetup,
		Kind:       KindMappingMissing,
		Message:    fmt.Sprintf("No table mapping exists for table %q.", table),
		Resolution: "Add a mapping for the table to the mappings file (--mappings), restart the workers and replay the event.",
		Details:    map[string]string{"table": table},
	}
}

// DataverseUnavailable is the setup failure a transient failure becomes when its retries are
// spent: the message is parked as an error, not lost, and an administrator looks at Dataverse.
func DataverseUnavailable(last *Failure, attempts uint64) *Failure {
	return &Failure{
		Class: ClassSetup,
		Kind:  KindDataverseUnavailable,
		Message: fmt.Sprintf("Dataverse kept failing for this change; its retries are spent after %d deliveries (last: %s).",
			attempts, last.Message),
		Resolution: "Check Dataverse's service health and the integration user's API limits; replay the error when Dataverse answers again.",
		Details:    map[string]string{"last_kind": string(last.Kind), "attempts": fmt.Sprint(attempts)},
		Dataverse:  last.Dataverse,
	}
}

// Unprocessable is the setup failure for a message that failed for a reason outside Dataverse
// (the coupling store, most often) on its last delivery.
func Unprocessable(err error, attempts uint64) *Failure {
	return &Failure{
		Class:      ClassSetup,
		Kind:       KindUnknown,
		Message:    fmt.Sprintf("The change could not be processed after %d deliveries: %v.", attempts, err),
		Resolution: "Check the workers' logs and their database; replay the error once the cause is fixed.",
		Details:    map[string]string{"attempts": fmt.Sprint(attempts)},
	}
}

// Crashed is the setup failure for a change whose handling panicked: a bug in dvsync, reported
// with the change kept for replay rather than crashing the worker on every delivery.
func Crashed(panicked any) *Failure {
	return &Failure{
		Class:      ClassSetup,
		Kind:       KindUnknown,
		Message:    fmt.Sprintf("dvsync failed while handling this change (panic: %v).", panicked),
		Resolution: "This is a bug in dvsync: report it with the call stack; replay the error once a fixed version runs.",
		Details:    map[string]string{"panic": fmt.Sprint(panicked)},
	}
}

// userKinds are the kinds a user fixes; every other permanent kind is the administrator's.
var userKinds = map[Kind]bool{KindDependencyNotCoupled: true, KindDestinationDeleted: true, KindSourceDeleted: true,
	KindDuplicateRecord: true, KindUpdateConflict: true, KindInvalidData: true,
	KindNoMatch: true, KindMultipleMatches: true, KindAlreadyCoupled: true, KindStateConflict: true, KindDeleteBlocked: true}

// ClassOf is the class of a permanent failure kind.
func ClassOf(k Kind) Class {
	if userKinds[k] {
		return ClassCoupling
	}
	return ClassSetup
}

// RecordSkipped is the failure reported for a change of a skipped record: the change is kept with
// the record's open error and not sent, as Business Central skips a record after a repeated failure.
// cause is the failure the change itself met (its lookups'), or nil: when it is of the skipped
// kind its details are kept, so that a record skipped for a dependency names the dependency it
// waits for. Its error may be the only one of the record the ledger gets (the errors of the
// failures before it can be lost, or stored after it), and the ledger finds the records to
// replay once a dependency is coupled by the dependency their errors name.
func RecordSkipped(ev ChangeEvent, kind Kind, failures int, cause *Failure) *Failure {
	details := map[string]string{}
	if cause != nil && cause.Kind == kind {
		maps.Copy(details, cause.Details)
	}
	details["skipped"], details["failures"] = "true", fmt.Sprint(failures)
	return &Failure{
		Class: ClassOf(kind),
		Kind:  kind,
		Message: fmt.Sprintf("%s is skipped: it failed with %s %d times in a row. This change is kept and not sent.",
			ev.Ref(), kind, failures),
		Resolution: "Fix the cause named in the record's error, then retry the record; a missing dependency is noticed by itself once it is coupled.",
		Details:    details,
	}
}

// Truncate bounds text kept for people (call stacks, messages) to about n bytes, cutting on a
// character boundary and saying that it did.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…(truncated)"
}
