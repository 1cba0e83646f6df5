package domain

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// kindTable is every failure kind with the class a person finds it under and its name in words,
// in the order of the README's "Who fixes what" table. It is the one list of kinds: pages and
// filters read it through Kinds, KindsOf and Words.
var kindTable = []struct {
	kind  Kind
	class Class
	words string
}{
	{KindDependencyNotCoupled, ClassCoupling, "Dependency not coupled"},
	{KindDestinationDeleted, ClassCoupling, "Dataverse row deleted"},
	{KindSourceDeleted, ClassCoupling, "Source record deleted"},
	{KindDuplicateRecord, ClassCoupling, "Duplicate record"},
	{KindUpdateConflict, ClassCoupling, "Update conflict"},
	{KindInvalidData, ClassCoupling, "Invalid data"},
	{KindNoMatch, ClassCoupling, "No match"},
	{KindMultipleMatches, ClassCoupling, "Multiple matches"},
	{KindAlreadyCoupled, ClassCoupling, "Match already coupled"},
	{KindStateConflict, ClassCoupling, "Record state conflict"},
	{KindDeleteBlocked, ClassCoupling, "Delete blocked by a reference"},

	{KindMissingPrivilege, ClassSetup, "Missing privilege"},
	{KindAuthentication, ClassSetup, "Authentication failed"},
	{KindUserDisabled, ClassSetup, "User disabled or unlicensed"},
	{KindAppRestricted, ClassSetup, "Application restricted from the API"},
	{KindSchemaMismatch, ClassSetup, "Schema mismatch"},
	{KindOptionValueMissing, ClassSetup, "Option value missing"},
	{KindMappingMissing, ClassSetup, "Mapping missing"},
	{KindInvalidEvent, ClassSetup, "Invalid event"},
	{KindCustomLogic, ClassSetup, "Rejected by custom logic"},
	{KindDataverseUnavailable, ClassSetup, "Dataverse unavailable"},
	{KindUnknown, ClassSetup, "Unknown error"},

	{KindThrottled, ClassTransient, "Throttled"},
	{KindServerError, ClassTransient, "Dataverse server error"},
	{KindNetwork, ClassTransient, "Network failure"},
	{KindTimeout, ClassTransient, "Timed out"},
	{KindInternal, ClassTransient, "Internal error"},
}

// Kinds lists every failure kind.
func Kinds() []Kind {
	out := make([]Kind, len(kindTable))
	for i, k := range kindTable {
		out[i] = k.kind
	}
	return out
}

// KindsOf lists the kinds of one class; empty: the kinds of the errors a person fixes (coupling
// and setup), as the errors ledger holds them.
func KindsOf(c Class) []Kind {
	var out []Kind
	for _, k := range kindTable {
		if k.class == c || c == "" && k.class != ClassTransient {
			out = append(out, k.kind)
		}
	}
	return out
}

// Words names a kind for a person ("Dependency not coupled"); a kind this version does not know
// (from a newer one, in a shared ledger) is its code with spaces, capitalised.
func (k Kind) Words() string {
	for _, e := range kindTable {
		if e.kind == k {
			return e.words
		}
	}
	s := strings.ReplaceAll(string(k), "_", " ")
	r, size := utf8.DecodeRuneInString(s)
	return string(unicode.ToUpper(r)) + s[size:]
}
