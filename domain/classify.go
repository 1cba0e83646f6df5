package domain

import (
	"errors"
	"fmt"
	"regexp"
)

// privilegeMessage matches both forms of Dataverse's missing-privilege message:
//
//	Principal user (Id=<g>, type=8) is missing prvCreateAccount privilege (Id=<g>)
//	Principal user (Id=<g>, type=8, roleCount=1, ...), is missing prvCreateAccount privilege (Id=<g>) on OTC=1 for entity 'account' ...
var privilegeMessage = regexp.MustCompile(`Principal (?:user|team) \(Id=([0-9a-fA-F-]{36}), type=(\d+)[^)]*\),? is missing (prv([A-Z][a-z]+(?:To)?)(\w+)) privilege`)

var entityInMessage = regexp.MustCompile(`for entity '(\w+)'`)

// codeRule sorts one Dataverse error code.
type codeRule struct {
	class Class
	kind  Kind
}

// dataverseCodes decide first: Dataverse's statuses are unreliable (duplicate detection answers
// 500), its codes are not. The failure taxonomy issue extends this table.
var dataverseCodes = map[string]codeRule{
	"0x80040220": {ClassSetup, KindMissingPrivilege},
	"0x80040231": {ClassSetup, KindMissingPrivilege},
	"0x80048306": {ClassSetup, KindMissingPrivilege},
	"0x80042f09": {ClassSetup, KindUserDisabled},
	"0x8004d24b": {ClassSetup, KindUserDisabled},
	"0x80040225": {ClassSetup, KindUserDisabled},
	"0x8004a112": {ClassSetup, KindUserDisabled},
	"0x80072560": {ClassSetup, KindUserDisabled},
	"0x8004a100": {ClassSetup, KindAuthentication},
	"0x8004a105": {ClassSetup, KindAuthentication},
	"0x80040204": {ClassSetup, KindAuthentication},
	"0x80044302": {ClassSetup, KindAuthentication},
	"0x80040217": {ClassCoupling, KindDestinationDeleted},
	"0x80060891": {ClassCoupling, KindDestinationDeleted},
	"0x80040237": {ClassCoupling, KindDuplicateRecord},
	"0x80060892": {ClassCoupling, KindDuplicateRecord},
	"0x80040333": {ClassCoupling, KindDuplicateRecord},
	"0x80060882": {ClassCoupling, KindUpdateConflict},
	"0x80044331": {ClassCoupling, KindInvalidData},
	"0x8004432f": {ClassCoupling, KindInvalidData},
	"0x80044330": {ClassCoupling, KindInvalidData},
	"0x80040278": {ClassCoupling, KindInvalidData},
	"0x8004431a": {ClassSetup, KindOptionValueMissing},
	"0x80061005": {ClassSetup, KindOptionValueMissing},
	"0x80060890": {ClassSetup, KindSchemaMismatch},
	"0x8006088a": {ClassSetup, KindSchemaMismatch},
	"0x80090800": {ClassSetup, KindSchemaMismatch},
	"0x80048d19": {ClassSetup, KindSchemaMismatch},
	"0x80072322": {ClassTransient, KindThrottled},
	"0x80072321": {ClassTransient, KindThrottled},
	"0x80072326": {ClassTransient, KindThrottled},
	"0x8005f103": {ClassTransient, KindThrottled},
	"0x8004418d": {ClassTransient, KindServerError},
	"0x80044150": {ClassTransient, KindServerError},
	"0x80044151": {ClassTransient, KindServerError},
	"0x80044339": {ClassTransient, KindServerError},
	"0x80040255": {ClassTransient, KindServerError},
}

// ClassifyDataverse sorts an error returned by the Dataverse port. Errors that are neither a
// DataverseError nor unreachability are not Dataverse's and are returned as nil.
func ClassifyDataverse(err error) *Failure {
	if errors.Is(err, ErrDataverseUnreachable) {
		return &Failure{Class: ClassTransient, Kind: KindNetwork,
			Message:    "Dataverse could not be reached: " + err.Error(),
			Resolution: "None needed: the record is retried automatically."}
	}
	var dv *DataverseError
	if !errors.As(err, &dv) {
		return nil
	}
	f := &Failure{Dataverse: dv, RetryAfter: dv.RetryAfter, Message: dv.Message, Details: map[string]string{}}
	if rule, ok := dataverseCodes[NormalizeCode(dv.Code)]; ok {
		f.Class, f.Kind = rule.class, rule.kind
	} else {
		switch {
		case dv.Status == 429 || dv.Status >= 500:
			f.Class, f.Kind = ClassTransient, KindServerError
			if dv.Status == 429 {
				f.Kind = KindThrottled
			}
		case dv.Status == 401:
			f.Class, f.Kind = ClassSetup, KindAuthentication
		case dv.Status == 403:
			f.Class, f.Kind = ClassSetup, KindMissingPrivilege
		case dv.Status == 400 && NormalizeCode(dv.Code) == "0x0":
			f.Class, f.Kind = ClassSetup, KindSchemaMismatch
		default:
			// An unknown error is shown to an administrator with its raw message; never retried forever.
			f.Class, f.Kind = ClassSetup, KindUnknown
		}
	}
	f.Resolution = resolutionFor(f)
	return f
}

func resolutionFor(f *Failure) string {
	switch f.Kind {
	case KindMissingPrivilege:
		if m := privilegeMessage.FindStringSubmatch(f.Dataverse.Message); m != nil {
			f.Details["user_id"], f.Details["principal_type"] = m[1], m[2]
			f.Details["privilege"], f.Details["verb"], f.Details["entity"] = m[3], m[4], m[5]
			if e := entityInMessage.FindStringSubmatch(f.Dataverse.Message); e != nil {
				f.Details["entity"] = e[1]
			}
			return fmt.Sprintf("In Dataverse, add the %s privilege (%s on %s) to a security role of the integration user (Id=%s), then retry.",
				m[3], m[4], f.Details["entity"], m[1])
		}
		return "In Dataverse, give the integration user a security role with the privilege named in the message, then retry."
	case KindUserDisabled:
		return "In Dataverse, enable the integration (application) user and assign it a security role, then retry."
	case KindAuthentication:
		return "Check the Entra ID tenant, client id and secret or certificate dvsync uses, and that an application user exists for the app."
	case KindDestinationDeleted:
		return "The coupled Dataverse row no longer exists: restore the record or delete the coupling."
	case KindDuplicateRecord:
		return "A Dataverse row with the same key already exists: couple the record to it or change the key."
	case KindUpdateConflict:
		return "The row changed in Dataverse since it was read: retry the record."
	case KindInvalidData:
		return "Correct the value named in the message in the source record; the record syncs when it changes."
	case KindOptionValueMissing:
		return "Add the missing option value in Dataverse or map the value to an existing one."
	case KindSchemaMismatch:
		return "The mapping names a table, attribute or lookup that Dataverse does not have: correct the mapping or the Dataverse schema."
	case KindThrottled, KindServerError, KindNetwork:
		return "None needed: the record is retried automatically."
	}
	return "Read the Dataverse message; fix the cause in Dataverse or in the mapping, then retry."
}
