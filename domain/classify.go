package domain

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Classifier sorts failures for the person who can fix them. It is pure and table-driven: the
// hex code decides first, then the exception name Dataverse sends as an annotation, then message
// patterns, then the HTTP status (Dataverse's statuses are unreliable: duplicate detection answers
// 500). Anything it does not know is a setup error of kind unknown with the raw message shown:
// never a crash, never an endless transient loop.
type Classifier struct {
	// IntegrationUser names the Dataverse application user dvsync signs in as, for resolutions
	// ("add the privilege to a security role of <IntegrationUser>").
	IntegrationUser string
}

// rule is a class and kind, the outcome of one table row.
type rule struct {
	class Class
	kind  Kind
}

var (
	setup     = func(k Kind) rule { return rule{ClassSetup, k} }
	coupling  = func(k Kind) rule { return rule{ClassCoupling, k} }
	transient = func(k Kind) rule { return rule{ClassTransient, k} }
)

// byCode sorts Dataverse's hex codes (lower case). Sources: shared/reference/dataverse-webapi.md.
var byCode = map[string]rule{
	"0x80040220": setup(KindMissingPrivilege),   // PrivilegeDenied
	"0x80040231": setup(KindMissingPrivilege),   // PrincipalPrivilegeDenied
	"0x80048306": setup(KindMissingPrivilege),   // record-level access
	"0x8004a106": setup(KindMissingPrivilege),   // PrivilegeCheck failed in bulk ("CrmCheckPrivilege failed")
	"0x80042f09": setup(KindUserDisabled),       // UserNotAssignedRoles
	"0x80042f0a": setup(KindUserDisabled),       // TeamNotAssignedRoles
	"0x8004d24b": setup(KindUserDisabled),       // UserNotAssignedLicense
	"0x80040225": setup(KindUserDisabled),       // user disabled or not in a business unit
	"0x8004a112": setup(KindUserDisabled),       // SystemUserDisabled
	"0x80072560": setup(KindUserDisabled),       // UserNotMemberOfOrg
	"0x80095ffc": setup(KindAppRestricted),      // the app is restricted from the Dataverse API
	"0x80048cf3": coupling(KindDuplicateRecord), // DuplicateIsoCurrencyCode: the currency exists already
	"0x8004a100": setup(KindAuthentication),     // InvalidAuthTicket
	"0x8004a105": setup(KindAuthentication),     // TamperedAuthTicket
	"0x80040204": setup(KindAuthentication),     // InvalidUserAuth
	"0x80044302": setup(KindAuthentication),     // RequestIsNotAuthenticated
	"0x8005f101": setup(KindAuthentication),     // AccessTokenExpired (the client already retried once)
	"0x80040217": coupling(KindDestinationDeleted),
	"0x80060891": coupling(KindDestinationDeleted), // RecordNotFoundByEntityKey
	"0x80040237": coupling(KindDuplicateRecord),
	"0x80060892": coupling(KindDuplicateRecord),
	"0x80040333": coupling(KindDuplicateRecord), // duplicate detection, answered with 500
	"0x80060882": coupling(KindUpdateConflict),  // ConcurrencyVersionMismatch
	"0x80040227": coupling(KindUpdateConflict),  // CannotDeleteDueToAssociation
	"0x80044331": coupling(KindInvalidData),     // StringLengthTooLong
	"0x8004432f": coupling(KindInvalidData),     // IntegerValueOutOfRange
	"0x80044330": coupling(KindInvalidData),     // DecimalValueOutOfRange
	"0x80040278": coupling(KindInvalidData),     // InvalidCharactersInField
	"0x8004418a": coupling(KindInvalidData),     // RequestLengthTooLarge
	"0x8004431a": setup(KindOptionValueMissing), // PicklistValueOutOfRange
	"0x80061005": setup(KindOptionValueMissing), // OptionSetValidationFailed
	"0x80060890": setup(KindSchemaMismatch),     // EntityKeyNotDefined
	"0x8006088a": setup(KindSchemaMismatch),     // resource not found for the segment
	"0x80060888": setup(KindSchemaMismatch),     // resource not found for the segment (seen in public reports)
	"0x80090800": setup(KindSchemaMismatch),     // InvalidUrlForODataBindProperty
	"0x80048d19": setup(KindSchemaMismatch),     // payload error: unknown column or bind name
	"0x80040265": setup(KindCustomLogic),        // IsvAborted: a plug-in rejected the write
	"0x80040224": setup(KindCustomLogic),        // IsvUnExpected
	"0x80081111": setup(KindCustomLogic),        // plug-in timeout
	"0x80040251": setup(KindCustomLogic),        // no active transaction (a plug-in swallowed an error)
	"0x80072322": transient(KindThrottled),
	"0x80072321": transient(KindThrottled),
	"0x80072326": transient(KindThrottled),
	"0x8005f103": transient(KindThrottled),
	"0x8004418d": transient(KindServerError), // SandboxWorkerNotAvailable
	"0x80044151": transient(KindServerError), // SQL timeout
	"0x80044339": transient(KindServerError), // CouldNotObtainLockOnResource
	"0x80040255": transient(KindServerError), // TransactionAborted (a swallowed deadlock)
}

// byName sorts ApiExceptionMessageName, for codes the table does not know.
var byName = map[string]rule{
	"PrivilegeDenied":                          setup(KindMissingPrivilege),
	"PrincipalPrivilegeDenied":                 setup(KindMissingPrivilege),
	"ObjectDoesNotExist":                       coupling(KindDestinationDeleted),
	"RecordNotFoundByEntityKey":                coupling(KindDestinationDeleted),
	"DuplicateRecord":                          coupling(KindDuplicateRecord),
	"DuplicateRecordEntityKey":                 coupling(KindDuplicateRecord),
	"DuplicateRecordsFound":                    coupling(KindDuplicateRecord),
	"ConcurrencyVersionMismatch":               coupling(KindUpdateConflict),
	"StringLengthTooLong":                      coupling(KindInvalidData),
	"PicklistValueOutOfRange":                  setup(KindOptionValueMissing),
	"SandboxWorkerNotAvailable":                transient(KindServerError),
	"ThrottlingBurstRequestLimitExceededError": transient(KindThrottled),
	"ThrottlingTimeExceededError":              transient(KindThrottled),
	"ThrottlingConcurrencyLimitExceededError":  transient(KindThrottled),
	"IsvAborted":                               setup(KindCustomLogic),
}

// pattern sorts by message when neither code nor name decided.
type pattern struct {
	re *regexp.Regexp
	rule
}

var byMessage = []pattern{
	{regexp.MustCompile(`(?i)is missing '?prv\w+'? privilege|CrmCheckPrivilege failed|SecLib::(CheckPrivilege|AccessCheckEx) failed|does not have \w+ right`), setup(KindMissingPrivilege)},
	{regexp.MustCompile(`(?i)Sql Number: 1205\b|deadlock`), transient(KindServerError)},
	{regexp.MustCompile(`(?i)SQL timeout expired|Execution Timeout Expired|Sql Number: -2\b`), transient(KindServerError)},
	{regexp.MustCompile(`(?i)timed out|operation has timed-out`), transient(KindTimeout)},
	{regexp.MustCompile(`(?i)no Sandbox (Worker processes|Hosts) are currently available|is not currently available|Please (try|retry)( the connection)? again|Please retry`), transient(KindServerError)},
	{regexp.MustCompile(`(?i)With Ids? = .{0,80}?(Does|Do) Not Exist|A record with the specified key values does not exist`), coupling(KindDestinationDeleted)},
	{regexp.MustCompile(`(?i)duplicate key|matching key values already exists|duplicate of the current record|Entity Key .* violated`), coupling(KindDuplicateRecord)},
	{regexp.MustCompile(`(?i)doesn't match the RowVersion`), coupling(KindUpdateConflict)},
	{regexp.MustCompile(`(?i)exceeded the maximum allowed length|is outside the valid range|contains one or more invalid characters`), coupling(KindInvalidData)},
	{regexp.MustCompile(`(?i)Cannot convert the literal|Cannot convert a primitive value|was not recognized as a valid Edm\.`), coupling(KindInvalidData)},
	{regexp.MustCompile(`(?i)picklist value is out of the range|value is out of range`), setup(KindOptionValueMissing)},
	{regexp.MustCompile(`(?i)Could not find a property named|undeclared property|Resource not found for the segment|URI segment .* is invalid|Invalid url value .* for lookup property|not a defined key|key in the request URI is not valid|Error identified in Payload|Stream was not readable|Invalid property '.*' was found`), setup(KindSchemaMismatch)},
	{regexp.MustCompile(`(?i)is disabled|not been assigned any (roles|licen[cs]e)|not a member of (any business unit|the organization)|no license|not licensed`), setup(KindUserDisabled)},
	{regexp.MustCompile(`(?i)AADSTS\d+|invalid_client|unauthorized_client|client secret keys .*expired|Application with identifier .* was not found|token is expired|authentication failed`), setup(KindAuthentication)},
	{regexp.MustCompile(`(?i)Number of (concurrent )?requests exceeded the limit|Combined execution time of incoming requests exceeded`), transient(KindThrottled)},
	{regexp.MustCompile(`(?i)ISV code aborted|Business Process Error|plug-?in`), setup(KindCustomLogic)},
}

// Classify sorts any error the sync meets. A *Failure is returned as it is; Dataverse's errors
// and unreachability are sorted by the tables; context deadlines are transient; any other error
// (the coupling store, most often) is a transient internal failure, bounded by the retry budget.
func (c Classifier) Classify(err error) *Failure {
	if err == nil {
		return nil
	}
	var f *Failure
	if errors.As(err, &f) {
		return f
	}
	if errors.Is(err, ErrDataverseUnreachable) {
		return &Failure{Class: ClassTransient, Kind: KindNetwork, Message: "Dataverse could not be reached: " + err.Error(),
			Resolution: resolutionRetried, Details: map[string]string{}}
	}
	var dv *DataverseError
	if errors.As(err, &dv) {
		return c.classifyDataverse(dv)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &Failure{Class: ClassTransient, Kind: KindTimeout, Message: "The change took longer than allowed: " + err.Error(),
			Resolution: resolutionRetried, Details: map[string]string{}}
	}
	return &Failure{Class: ClassTransient, Kind: KindInternal, Message: err.Error(),
		Resolution: "None needed if it passes: the change is retried; if it persists, check the workers' database.", Details: map[string]string{}}
}

// ClassifyDataverse sorts an error returned by the Dataverse port with no integration user named.
// It returns nil for errors that are not Dataverse's.
func ClassifyDataverse(err error) *Failure {
	var dv *DataverseError
	if errors.Is(err, ErrDataverseUnreachable) || errors.As(err, &dv) {
		return Classifier{}.Classify(err)
	}
	return nil
}

func (c Classifier) classifyDataverse(dv *DataverseError) *Failure {
	f := &Failure{Dataverse: dv, RetryAfter: dv.RetryAfter, Message: dv.Message, Details: map[string]string{}}
	// A generic SQL error (0x80044150) is in no table: its SQL number decides, by message.
	r, ok := byCode[NormalizeCode(dv.Code)]
	if !ok {
		r, ok = byName[dv.MessageName()]
	}
	if !ok {
		for _, p := range byMessage {
			if p.re.MatchString(dv.Message) {
				r, ok = p.rule, true
				break
			}
		}
	}
	if !ok {
		switch {
		case dv.Status == 429:
			r = transient(KindThrottled)
		case dv.Status == 502 || dv.Status == 503 || dv.Status == 504:
			r = transient(KindServerError)
		case dv.Status == 401:
			r = setup(KindAuthentication)
		case dv.Status == 403:
			r = setup(KindMissingPrivilege)
		case dv.Status >= 500 && dv.Code == "":
			r = transient(KindServerError) // a gateway or front end failed before Dataverse answered
		default:
			r = setup(KindUnknown)
		}
	}
	f.Class, f.Kind = r.class, r.kind
	details(f)
	f.Resolution = c.resolution(f)
	return f
}

var (
	// The principal's id may be redacted in reports (<guid>); its attributes may nest parentheses
	// ("accessMode=1(Setup/Stub user ...)"), so the match runs lazily up to "is missing".
	rePrivilege  = regexp.MustCompile(`Principal (user|team) \(Id=([^,)]+)(?:, type=(\d+))?(.*?)\)*,? is missing '?(prv(Create|Read|Write|Delete|AppendTo|Append|Assign|Share)?(\w+?))'? privilege`)
	reSecLib     = regexp.MustCompile(`SecLib::\w+ failed\. User: ([0-9a-fA-F-]{36}), PrivilegeName: (prv\w+)`)
	reAccessMode = regexp.MustCompile(`accessMode='?([^',)]+)`)
	reEntity     = regexp.MustCompile(`for entity '(\w+)'`)
	reCheckPriv  = regexp.MustCompile(`UserId: ([0-9a-fA-F-]{36}) and Privilege: (prv\w+)`)
	reRowMissing = regexp.MustCompile(`(?:Entity '(\w*)'|(\w+)) With Ids? = ([0-9a-fA-F-]{36}) (?:Does|Do) Not Exist`)
	reTooLong    = regexp.MustCompile(`length of the '(\w+)' attribute of the '(\w+)' entity exceeded the maximum allowed length of '(\d+)'`)
	reRange      = regexp.MustCompile(`(?:value of|value [^ ]+ of) '(\w+)' on record of type '(\w+)' is outside the valid range`)
	reEntityKey  = regexp.MustCompile(`Entity Key (.+?) violated`)
	reProperty   = regexp.MustCompile(`(?:property named|undeclared property) '([\w@.]+)'(?: on type 'Microsoft\.Dynamics\.CRM\.(\w+)')?`)
	reSegment    = regexp.MustCompile(`segment '([^']+)'`)
	reSQLNumber  = regexp.MustCompile(`Sql Number: (-?\d+)`)
	reAADSTS     = regexp.MustCompile(`AADSTS(\d+)`)
)

// details parses what the person acting needs out of Dataverse's message.
func details(f *Failure) {
	msg, d := f.Dataverse.Message, f.Details
	switch f.Kind {
	case KindMissingPrivilege:
		if m := rePrivilege.FindStringSubmatch(msg); m != nil {
			d["principal"], d["user_id"], d["principal_type"] = m[1], m[2], m[3]
			d["privilege"], d["verb"], d["entity"] = m[5], m[6], m[7]
			if a := reAccessMode.FindStringSubmatch(m[4]); a != nil {
				d["access_mode"] = strings.TrimSpace(a[1])
			}
		} else if m := reCheckPriv.FindStringSubmatch(msg); m != nil {
			d["user_id"], d["privilege"] = m[1], m[2]
		} else if m := reSecLib.FindStringSubmatch(msg); m != nil {
			d["user_id"], d["privilege"] = m[1], m[2]
		}
		if e := reEntity.FindStringSubmatch(msg); e != nil {
			d["entity"] = e[1]
		}
		// A stub user is one Dataverse created without a licence or a role (a user who never
		// signed in, or an application user nobody gave a role).
		if strings.Contains(msg, "roleCount=0") || strings.Contains(strings.ToLower(msg), "stub") {
			d["licence_hint"] = "the user has no security role (a stub or unlicensed user)"
		}
	case KindDestinationDeleted:
		if m := reRowMissing.FindStringSubmatch(msg); m != nil {
			d["entity"], d["row_id"] = strings.ToLower(m[1]+m[2]), strings.ToLower(m[3])
		}
	case KindInvalidData:
		if m := reTooLong.FindStringSubmatch(msg); m != nil {
			d["attribute"], d["entity"], d["limit"] = m[1], m[2], m[3]
		} else if m := reRange.FindStringSubmatch(msg); m != nil {
			d["attribute"], d["entity"] = m[1], m[2]
		}
	case KindDuplicateRecord:
		if m := reEntityKey.FindStringSubmatch(msg); m != nil {
			d["key"] = m[1]
		}
	case KindSchemaMismatch:
		if m := reProperty.FindStringSubmatch(msg); m != nil {
			d["attribute"], d["entity"] = m[1], m[2]
		} else if m := reSegment.FindStringSubmatch(msg); m != nil {
			d["segment"] = m[1]
		}
	case KindServerError:
		if m := reSQLNumber.FindStringSubmatch(msg); m != nil {
			d["sql_number"] = m[1]
		}
	case KindAuthentication:
		if m := reAADSTS.FindStringSubmatch(msg); m != nil {
			d["aadsts"] = m[1]
		}
	}
	for k, v := range d {
		if v == "" {
			delete(d, k)
		}
	}
}

const resolutionRetried = "None needed: the change is retried automatically."

func (c Classifier) user() string {
	if c.IntegrationUser != "" {
		return "the integration user " + c.IntegrationUser
	}
	return "the integration user"
}

// resolution says what the person who can fix the failure should do, as the Business Central page does.
func (c Classifier) resolution(f *Failure) string {
	d := f.Details
	switch f.Kind {
	case KindMissingPrivilege:
		if d["privilege"] != "" {
			what := d["privilege"]
			if d["verb"] != "" && d["entity"] != "" {
				what = fmt.Sprintf("%s (%s on %s)", d["privilege"], d["verb"], d["entity"])
			}
			return fmt.Sprintf("In Dataverse, sign in as an administrator and add the %s privilege to a security role of %s (Id=%s); then retry.",
				what, c.user(), d["user_id"])
		}
		return fmt.Sprintf("In Dataverse, give %s a security role with the privilege the message names; then retry.", c.user())
	case KindUserDisabled:
		return fmt.Sprintf("In Dataverse, enable %s, give it a security role (and a licence if it is not an application user); then retry.", c.user())
	case KindAppRestricted:
		return "An administrator restricted this application from the Dataverse API: ask them to lift the restriction on its application id " +
			"in the Power Platform admin center. It is not a missing privilege: changing roles does not help."
	case KindAuthentication:
		return "Check the Entra ID tenant, client id and client secret (or certificate) dvsync uses, that the secret has not expired, and that an application user exists in Dataverse for the app."
	case KindDestinationDeleted:
		if d["row_id"] != "" {
			return fmt.Sprintf("The Dataverse %s row %s no longer exists: %s.", d["entity"], d["row_id"], rowDeletedActions)
		}
		return "The coupled Dataverse row no longer exists: " + rowDeletedActions + "."
	case KindDuplicateRecord:
		return fmt.Sprintf("Dataverse already has a row with the same key or duplicate-rule values: %s the record to that row (on the error's page, with the row's id), or change the value in the source.",
			ActionCouple.Button)
	case KindUpdateConflict:
		return "The row changed in Dataverse in the meantime: retry the record."
	case KindInvalidData:
		if d["attribute"] != "" && d["limit"] != "" {
			return fmt.Sprintf("Shorten the value written to %s.%s to at most %s characters in the source record; it syncs when it changes.", d["entity"], d["attribute"], d["limit"])
		}
		return "Correct the value the message names in the source record; it syncs when it changes."
	case KindOptionValueMissing:
		return "Add the missing option value to the Dataverse column, or map the source value to an existing option."
	case KindSchemaMismatch:
		if d["attribute"] != "" {
			return fmt.Sprintf("Dataverse has no column %q on %s: correct the mapping or add the column in Dataverse.", d["attribute"], d["entity"])
		}
		return "The mapping names a table, column, key or lookup that Dataverse does not have: correct the mapping or the Dataverse schema."
	case KindCustomLogic:
		return "A custom plug-in or business process in Dataverse rejected the write with the message above: correct the record, or have the administrator review the plug-in."
	case KindThrottled, KindServerError, KindNetwork, KindTimeout:
		return resolutionRetried
	}
	return "dvsync does not know this error: read Dataverse's message, fix the cause in Dataverse or in the mapping, then retry."
}
