package domain

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"

	// redact is a leaf package of pure text rules (no I/O): the one place credential removal lives.
	"github.com/dvsync/dvsync/infra/redact"
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
	"0x80040227": coupling(KindDeleteBlocked),   // CannotDeleteDueToAssociation (a restrict relationship)
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

// maxRuleText is how much of a message the message rules read: Dataverse and its gateways say
// what failed first and append traces after; a plug-in's megabyte of trace must not cost each
// worker seconds of regular expressions on every failure.
const maxRuleText = 8 << 10

// matchMessage is the first message rule that matches the message's first maxRuleText bytes.
func matchMessage(status int, msg string) (rule, bool) {
	if len(msg) > maxRuleText {
		cut := maxRuleText
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut]
	}
	lower, ascii := strings.ToLower(msg), isASCII(msg)
	for _, p := range byMessage {
		if p.serverSide && status != 0 && status < 500 || p.only5xx && status < 500 {
			continue
		}
		if p.matches(msg, lower, ascii) {
			return p.rule, true
		}
	}
	return rule{}, false
}

// byStatus sorts by HTTP status what neither code, name nor message decided.
func byStatus(dv *DataverseError) (rule, bool) {
	switch {
	case dv.Status == 429:
		return transient(KindThrottled), true
	case dv.Status == 502 || dv.Status == 503 || dv.Status == 504:
		return transient(KindServerError), true
	case dv.Status == 401:
		return setup(KindAuthentication), true
	case dv.Status == 403:
		return setup(KindMissingPrivilege), true
	case dv.Status >= 500 && dv.Code == "":
		// A gateway or front end failed before Dataverse answered; a configuration fault of the
		// service that also answers so was caught by its message rule above.
		return transient(KindServerError), true
	}
	return rule{}, false
}

// unclassified is the fallback when no rule knows the error: the safest choice for the person is
// an administrator's error that says what dvsync could not tell and shows Dataverse's words
// (without credentials), never a retry loop nor a user's error they cannot act on.
func (c Classifier) unclassified(dv *DataverseError) *Failure {
	raw := redact.Text(dv.Message)
	if strings.TrimSpace(raw) == "" {
		raw = "(no message)"
	}
	code, details := "none", map[string]string{"status": fmt.Sprint(dv.Status)}
	if dv.Code != "" {
		code, details["code"] = dv.Code, dv.Code
	}
	return &Failure{
		Class: ClassSetup, Kind: KindUnknown, Dataverse: dv, RetryAfter: dv.RetryAfter, unclassified: true,
		Message: fmt.Sprintf("dvsync could not tell whether this Dataverse error (HTTP %d, code %s) needs an administrator, a change of the record "+
			"or only a retry: no classifier rule knows it. Dataverse said: %s", dv.Status, code, raw),
		Resolution: "Read Dataverse's message: fix the cause in Dataverse, in the mapping or in the source record, then retry. " +
			"Report the message to dvsync's maintainers so that a rule learns it.",
		Details: details,
	}
}

func (c Classifier) classifyDataverse(dv *DataverseError) *Failure {
	f := &Failure{Dataverse: dv, RetryAfter: dv.RetryAfter, Message: dv.Message, Details: map[string]string{}}
	// A generic SQL error (0x80044150) is in no table: its SQL number decides, by message.
	r, ok := byCode[NormalizeCode(dv.Code)]
	if !ok {
		r, ok = byName[dv.MessageName()]
	}
	if !ok {
		r, ok = matchMessage(dv.Status, dv.Message)
	}
	if !ok {
		r, ok = byStatus(dv)
	}
	if !ok {
		return c.unclassified(dv)
	}
	f.Class, f.Kind = r.class, r.kind
	details(f)
	f.Resolution = c.resolution(f)
	return f
}

var (
	// The principal's id may be redacted in reports (<guid>); its attributes may nest parentheses
	// ("accessMode=1(Setup/Stub user ...)") and span lines, so the match runs lazily up to "is missing".
	rePrivilege  = regexp.MustCompile(`(?s)Principal (user|team) \(Id=([^,)]+)(?:, type=(\d+))?(.*?)\)*,?\s+is missing '?(prv(Create|Read|Write|Delete|AppendTo|Append|Assign|Share)?(\w+?))'? privilege`)
	reSecLib     = regexp.MustCompile(`SecLib::\w+ failed\. User: ([0-9a-fA-F-]{36}), PrivilegeName: (prv\w+)`)
	reAccessMode = regexp.MustCompile(`accessMode='?([^',)]+)`)
	reEntity     = regexp.MustCompile(`for entity '(\w+)'`)
	reCheckPriv  = regexp.MustCompile(`UserId: ([0-9a-fA-F-]{36}) and Privilege: (prv\w+)`)
	reRowMissing = regexp.MustCompile(`(?:Entity '(\w*)'|(\w+)) With Ids? = ([0-9a-fA-F-]{36}) (?:Does|Do) Not Exist`)
	reTooLong    = regexp.MustCompile(`length of the '(\w+)' attribute of the '(\w+)' entity exceeded the maximum allowed length of '(\d+)'`)
	reRange      = regexp.MustCompile(`value (?:.{0,60}? )?of '(\w+)' on record of type '(\w+)'`)
	reAttribute  = regexp.MustCompile(`(?i)(?:attribute|field|column|property)(?: named)? '([\w.]+)'|'([\w.]+)' (?:attribute|field|column|property)|(?:attribute|field|column|property) ([a-z_]\w*[_]\w*)|Parameter(?: name)?: (?:Required (?:field|attribute|column) )?(\w+)|format for (\w+) is invalid`)
	reEdmType    = regexp.MustCompile(`expected type '(Edm\.\w+)'|valid (Edm\.\w+)`)
	reEntityKey  = regexp.MustCompile(`Entity Key (.+?) violated`)
	reProperty   = regexp.MustCompile(`(?:property named|undeclared property) '([\w@.]+)'(?: on type 'Microsoft\.Dynamics\.CRM\.(\w+)')?`)
	// "'account' entity doesn't contain attribute with Name = 'foo'", "Property 'id' wasn't found in account entity".
	reNoColumn  = regexp.MustCompile(`'(\w+)' entity (?:doesn['’]t|does not) contain (?:an? )?(?:attribute|column|field|property) with Name = '([\w.@]+)'`)
	reNotFound  = regexp.MustCompile(`(?i)(?:attribute|column|field|property) '([\w.@]+)' (?:wasn['’]t|was not|is not|could not be|cannot be) found(?: (?:in|on) (?:the )?'?(\w+)'? (?:entity|table))?`)
	reSegment   = regexp.MustCompile(`segment '([^']+)'`)
	reSQLNumber = regexp.MustCompile(`Sql Number: (-?\d+)`)
	// "The user with id … need a role with the prvReadAsyncOperation privilege", `missing "prvReadSolution" privileges`.
	rePrvNamed = regexp.MustCompile(`(?is)(?:user with id ([0-9a-f-]{36})\b.{0,200}?)?["'“]?\b(prv[A-Z]\w*)["'”]? privileges?`)
	reNoTable  = regexp.MustCompile(`(?i)(?:table|entity) with (?:the )?(?:logical |schema )?name '([\w.]+)' (?:does not|doesn['’]t) exist`)
	reAADSTS   = regexp.MustCompile(`AADSTS(\d+)`)
	// The host named in a failed lookup of a placeholder environment URL.
	rePlaceholder = regexp.MustCompile(`(?i)(?:resolved|host|ENOTFOUND|getaddrinfo)\W{1,4}(?:\S*[/@])?((?:your-?org(?:anization)?|your-?(?:environment|instance|tenant)|orgname|<org>|\{org\})\.(?:crm\d*\.)?dynamics\.com)`)
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
		} else if m := rePrvNamed.FindStringSubmatch(msg); m != nil {
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
		} else if m := reAttribute.FindStringSubmatch(msg); m != nil {
			d["attribute"] = m[1] + m[2] + m[3] + m[4] + m[5]
		}
		if m := reEdmType.FindStringSubmatch(msg); m != nil {
			d["expected_type"] = m[1] + m[2]
		}
	case KindStateConflict, KindDeleteBlocked:
		if e := reEntity.FindStringSubmatch(msg); e != nil {
			d["entity"] = e[1]
		}
	case KindDuplicateRecord:
		if m := reEntityKey.FindStringSubmatch(msg); m != nil {
			d["key"] = m[1]
		}
	case KindSchemaMismatch:
		if m := reProperty.FindStringSubmatch(msg); m != nil {
			d["attribute"], d["entity"] = m[1], m[2]
		} else if m := reNoColumn.FindStringSubmatch(msg); m != nil {
			d["entity"], d["attribute"] = m[1], m[2]
		} else if m := reNotFound.FindStringSubmatch(msg); m != nil {
			d["attribute"], d["entity"] = m[1], m[2]
		} else if m := reNoTable.FindStringSubmatch(msg); m != nil {
			d["entity"] = m[1]
		} else if m := reSegment.FindStringSubmatch(msg); m != nil {
			d["segment"] = m[1]
		}
	case KindServerError:
		if m := reSQLNumber.FindStringSubmatch(msg); m != nil {
			d["sql_number"] = m[1]
		}
	case KindDataverseUnavailable:
		if m := rePlaceholder.FindStringSubmatch(msg); m != nil {
			d["host"] = m[1]
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
		if d["principal"] == "team" {
			// Dataverse checked a team's roles (an owner team, or a group team the user acts
			// through): a role given to the user directly does not reach the team's check.
			what := "the privilege the message names"
			if d["privilege"] != "" {
				what = "the " + d["privilege"] + " privilege"
			}
			team := "the team the message names"
			if d["user_id"] != "" {
				team = "the team with Id=" + d["user_id"]
			}
			return fmt.Sprintf("In Dataverse, sign in as an administrator and add a security role with %s to %s "+
				"(the privilege is missing on the team, not on %s: a role of the user does not fix it); then retry.", what, team, c.user())
		}
		if d["privilege"] != "" {
			what := d["privilege"]
			if d["verb"] != "" && d["entity"] != "" {
				what = fmt.Sprintf("%s (%s on %s)", d["privilege"], d["verb"], d["entity"])
			}
			who := c.user()
			if d["user_id"] != "" {
				who += " (Id=" + d["user_id"] + ")"
			}
			res := fmt.Sprintf("In Dataverse, sign in as an administrator and add the %s privilege to a security role of %s; then retry.", what, who)
			if d["licence_hint"] != "" {
				// A stub user's privileges are filtered until it has a licence: a role it has already does not count.
				res += " Dataverse reports a stub or unlicensed user: if its roles have the privilege already, assign it a licence (or a full access mode)."
			}
			return res
		}
		return fmt.Sprintf("In Dataverse, give %s a security role with the privilege (or the administrator's role) the message names; then retry.", c.user())
	case KindUserDisabled:
		return fmt.Sprintf("In Dataverse, enable the user the message names (%s, or the owner a record is assigned to), give it a security role "+
			"(and a licence if it is not an application user); then retry.", c.user())
	case KindDataverseUnavailable:
		if d["host"] != "" {
			return fmt.Sprintf("The host %s does not resolve: it is a placeholder, not an environment. Set DATAVERSE_URL to the environment URL "+
				"the Power Platform admin center shows (https://<org>.crm.dynamics.com); then retry.", d["host"])
		}
		return "The Dataverse environment is disabled, read-only, in administration mode or its services do not start, or it does not offer the request " +
			"(a Dataverse for Teams environment): check its state and type in the Power Platform admin center (an administrator's change, an update or a restore in progress); then retry."
	case KindAppRestricted:
		return "An administrator restricted this application from the Dataverse API: ask them to lift the restriction on its application id " +
			"in the Power Platform admin center. It is not a missing privilege: changing roles does not help."
	case KindAuthentication:
		return entraResolution(d["aadsts"])
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
		what := "the value the message names"
		if d["attribute"] != "" {
			what = "the value written to " + d["attribute"]
		}
		if d["expected_type"] != "" {
			what += " (Dataverse expects " + d["expected_type"] + ")"
		}
		return "Correct " + what + " in the source record: Dataverse refuses values outside its ranges (dates before 1753, numbers beyond the column's minimum or maximum, text longer than the column) " +
			"and values of another type; it syncs when it changes."
	case KindStateConflict:
		return "The Dataverse row (or its parent) is in a state that does not allow this change: closed, resolved, inactive or read-only. " +
			"Reopen or reactivate it in Dataverse if the change must land, or leave the record unchanged in the source; then retry the record."
	case KindDeleteBlocked:
		return "Dataverse does not delete the row because other rows refer to it (a relationship that restricts deletion): remove or reassign those rows in Dataverse, " +
			"or set the mapping's onDelete to deactivate or uncouple; then retry the record."
	case KindOptionValueMissing:
		return "Add the missing option value to the Dataverse column, or map the source value to an existing option."
	case KindSchemaMismatch:
		if d["attribute"] != "" {
			return fmt.Sprintf("Dataverse has no column %q on %s: correct the mapping or add the column in Dataverse.", d["attribute"], d["entity"])
		}
		if d["entity"] != "" {
			return fmt.Sprintf("Dataverse has no table %q: correct the mapping, or install the solution that adds the table in Dataverse.", d["entity"])
		}
		return "The mapping names a table, column, key or lookup that Dataverse does not have: correct the mapping or the Dataverse schema."
	case KindCustomLogic:
		return "A custom plug-in or business process in Dataverse rejected the write with the message above: correct the record, or have the administrator review the plug-in."
	case KindThrottled, KindServerError, KindNetwork, KindTimeout:
		return resolutionRetried
	}
	return "dvsync does not know this error: read Dataverse's message, fix the cause in Dataverse or in the mapping, then retry."
}
