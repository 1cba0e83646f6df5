package domain

import "regexp"

// messageRule sorts an error by the shape of Dataverse's message, when neither its hex code nor
// its exception name decided. Each rule is named (the name is in tests and in the README's
// account of the order) and matches a family of messages, not one message: Dataverse words the
// same cause many ways, in the user's language, and wraps it in plug-in and SDK text.
type messageRule struct {
	name string
	re   *regexp.Regexp
	rule
	// serverSide, when set, limits the rule to answers with no status or a 5xx: an HTML page
	// with a 404 is a wrong URL, not a gateway failing.
	serverSide bool
	// only5xx limits the rule to answers with a 5xx status.
	only5xx bool
	// branches are the expression's top-level alternatives, each with the literals it needs
	// (classify_prefilter.go).
	branches []branch
}

func rx(s string) *regexp.Regexp { return regexp.MustCompile(`(?i)` + s) }

func on(name string, re *regexp.Regexp, r rule) messageRule {
	return messageRule{name: name, re: re, rule: r, branches: branchesOf(re)}
}

func (m messageRule) serverOnly() messageRule { m.serverSide = true; return m }

// status5xx limits the rule to answers with a 5xx status.
func (m messageRule) status5xx() messageRule { m.only5xx = true; return m }

// byMessage is tried in order; the first match decides. The order is who acts, most specific
// first: an Entra ID code, which only a token request carries, and a failed WCF message security
// check; an administrator's block on the app before a missing privilege (the message of one can
// mention the other); a fault of the service's configuration (a 500 that retrying does not heal);
// deadlocks, locks, throttling and the sandbox service's own failure, which heal by themselves
// even when a plug-in passes them on; then a plug-in's own failure (its 2-minute limit is its
// author's to fix, not a timeout); then gateway pages, transport failures and timeouts, in several
// languages, before the record's rules, since a network failure's text can quote the request; the
// record's own causes (row gone, duplicate, state, blocked delete, bad or missing value) before the
// schema, and the schema before the generic wrappers ("An error occurred while validating input
// parameters", "Invalid … value", "plug-in") that other causes carry.
var byMessage = []messageRule{
	on("Entra ID code", rx(`AADSTS\d+|admin(istrator)? consent|only an admin(istrator)? can grant|(has|have) not consented`), setup(KindAuthentication)),
	on("message security failed", rx(messageSecurity), setup(KindAuthentication)),
	on("app restricted by an administrator", rx(`Access to (the )?Dataverse API is restricted for this application|application .{0,80}is restricted from (accessing )?(the )?(Dataverse|API)|restricted from the Dataverse API`), setup(KindAppRestricted)),
	// A user with no role at all is told so before the privilege its check names ("has not been
	// assigned any roles. They need a role with the prvReadUser privilege").
	on("user has no security role", rx(noRole), setup(KindUserDisabled)),
	on("missing privilege", rx(privilege), setup(KindMissingPrivilege)),

	// A fault of the service's configuration answers 500 with no code; retrying does not heal it.
	// The environment's own services failing to start come first: their text quotes the platform's
	// assemblies, which are no plug-in's.
	on("environment read-only, in administration mode or not starting", rx(`organization (database )?is (in )?read[- ]?only( mode)?|\bThe (Dynamics 365 )?organization\b[^.=]{0,60}is (currently )?disabled|not in (an )?enabled state|(organization|environment|instance) is (in )?(administration|admin) mode|(organization|environment|instance) (is )?(disabled|suspended)|environment is read[- ]?only|is in read-only mode|ServiceActivationException|service .{0,120}cannot be activated|`+
		// The environment's kind does not offer the request (a Dataverse for Teams environment).
		`is only allowed to be accessed (from|through|via) .{0,60}endpoint|(not (supported|available|allowed)|only allowed) .{0,80}Dataverse for Teams`), setup(KindDataverseUnavailable)),
	// A host name that does not resolve because it is a documentation placeholder ("yourorg"):
	// the configured environment URL was never filled in, which no retry heals.
	on("environment URL is a placeholder", rx(placeholderHost), setup(KindDataverseUnavailable)),
	on("plug-in assembly missing", rx(`Could not load (file or )?assembly|Unable to load (the )?plug-?in (assembly|type)|plug-?in assembly .{0,80}(not found|does not exist|could not be found)|PluginAssembly .{0,80}(Does Not Exist|not found)|Assembly must be registered in isolation|Unable to find (the )?plug-?in type`), setup(KindCustomLogic)),

	// A deadlock, a lock, throttling or the sandbox service's failure heals by itself even when a
	// plug-in passes it on.
	on("SQL deadlock", rx(`Sql Number: 1205\b|deadlock`), transient(KindServerError)),
	on("resource locked", rx(`another request is currently using the resource|More than one concurrent \w+ requests? (were |was )?detected|(could not|cannot|can['’]t|unable to|failed to) (obtain|acquire|get|take) (a |the )?(\w+ )?lock\b|lock (request )?time ?out|timed? ?out (waiting for|acquiring) (a |the )?lock`), transient(KindServerError)),
	on("SQL timeout", rx(`SQL (Server )?time-?out|Execution Timeout Expired|Sql Number: -2\b|timeout period elapsed prior to completion`), transient(KindServerError)),
	on("service protection", rx(throttled), transient(KindThrottled)),
	// The sandbox service not starting or not there is the platform's; a sandbox worker that
	// crashed or timed out ran the plug-in's code, the plug-in's author's.
	on("sandbox service unavailable", rx(`Sandbox (Client|Host|Service)s? .{0,60}(encountered an error|(is|are) (currently )?(not |un)available|could not be (reached|contacted|started)|failed to (start|initiali[sz]e)|not responding)|no Sandbox (Worker processes|Hosts|Clients?) (are|is) currently available|Sandbox\w*RetriableException|Worker Allocation Failure|no (sandbox )?workers (are )?available`), transient(KindServerError)),
	on("plug-in failed", rx(`Unexpected exception from plug-?in|unexpected error occurred from ISV code|ISV code aborted|Sandbox Worker process (crashed|terminated|exited|stopped)|(typically|likely|probably) (due to|caused by) an error in the plug-?in code|Couldn['’]t complete execution of the .{0,200}(plug-?in|custom activity)|`+
		// A custom assembly's own exception type crossing the sandbox's boundary, or its
		// dependency-injection container failing: no platform code raises these.
		`SerializationException: Type is not resolved for member|nested lifetimes cannot be created from this LifetimeScope|Autofac\.Core\.`), setup(KindCustomLogic)),
	on("gateway page", rx(gateway), transient(KindServerError)).serverOnly(),
	on("transport failure", rx(transport), transient(KindNetwork)),
	on("timeout", rx(timeouts), transient(KindTimeout)),
	on("server busy or unavailable", rx(`is not currently available|Please (try|retry)( the connection)? again|Please retry|try again later|server is busy|unable to process the request due to an internal error|Internal Server Error|temporarily unavailable|(Service|Server) Unavailable`), transient(KindServerError)),

	// A 5xx whose message is a .NET exception thrown inside the framework (its stack trace
	// shows) is the server's own crash, not a value of the record ("Value cannot be null … at
	// System.Text.RegularExpressions.Regex.Match").
	on("server's own exception at 5xx", rx(`(?s)\n\s*at System\.[\w.]+\(`), transient(KindServerError)).status5xx(),
	on("row does not exist", rx(`With Ids? ?= ?.{0,80}?(Does|Do) Not Exist|A record with the specified key values does not exist|\(Id ?= ?[0-9a-fA-F{}-]{36,38}\)[^.]{0,200}(doesn['’]t|does not) exist|(record|row) with (the )?(id|key) .{0,80}(doesn['’]t|does not) exist|(specified|requested|referenced|parent|related|target) (record|row)s? (does not|doesn['’]t|no longer) exists?|lookup\b.{0,60}(could not|cannot|can['’]t) be (resolved|found)`), coupling(KindDestinationDeleted)),
	on("duplicate", rx(duplicate), coupling(KindDuplicateRecord)),
	on("row version changed", rx(`(doesn['’]t|does not) match the RowVersion|RowVersion .{0,40}(mismatch|(doesn['’]t|does not) match)|has more recent (data|changes)|version of the (existing )?record (doesn['’]t|does not) match`), coupling(KindUpdateConflict)),
	on("delete blocked by a reference", rx(deleteBlocked), coupling(KindDeleteBlocked)),
	// Writing a column Dataverse keeps read-only is the mapping's fault, not the row's state.
	on("read-only column", rx(`(attribute|field|column|property) '?[\w.]+'? .{0,40}(is read[- ]?only|cannot be (set|updated|modified) because it is read[- ]?only)`), setup(KindSchemaMismatch)),
	// A column the metadata marks not valid for the operation (IsValidForRead, …ForCreate,
	// …ForUpdate) is the mapping's too.
	on("column not valid for the operation", rx(`(columns?|attributes?|fields?) (that|which) (is|are) (not )?valid for (read|create|update)|(is|are) not valid for (read|create|update)\b|IsValidFor(Read|Create|Update)`), setup(KindSchemaMismatch)),
	on("record state conflict", rx(stateConflict), coupling(KindStateConflict)),
	// A value a choice column has no option for is the administrator's (add the option or map the
	// value), before the ranges of numbers: a choice's range lists its accepted values, or the
	// column is a choice by its name (Dataverse names its choice columns …code: gendercode,
	// statuscode, industrycode).
	on("option value not among the column's options", rx(`is outside the valid range\. Accepted Values|of '\w+code' on record of type '\w+' is outside the valid range|picklist value is out of the range|value is out of range|is not a valid (option|picklist|choice) value|(option set|choice) value .{0,40}(is not valid|does not exist)`), setup(KindOptionValueMissing)),
	on("value out of range or too long", rx(outOfRange), coupling(KindInvalidData)),
	on("state, status or hierarchy combination not allowed", rx(`is not a valid status code for state code|(status( reason| code)?|statuscode)\b.{0,40}\bnot (a )?valid (for|with) (the |its )?(state|status)|would create a loop in|loop (exists )?in .{0,30}hierarchy|(connect|associate|link|relate) a record to itself`), coupling(KindInvalidData)),
	on("value of the wrong type", rx(wrongType), coupling(KindInvalidData)),
	on("required value missing", rx(requiredMissing), coupling(KindInvalidData)),
	on("schema mismatch", rx(schema), setup(KindSchemaMismatch)),
	on("invalid value", rx(`An error occurred while validating input parameters|is not valid for (the )?(attribute|field|column|property)|value (for|of) (the )?(attribute|field|column|property)\b.{0,60}\bis (not valid|invalid)|Invalid (e-?mail|phone|url|web ?site|postal code|zip code)\b|(e-?mail|phone|url) (address |number )?.{0,30}\bis (not valid|invalid)|(can ?not|can['’]t|must not|should not) be (earlier|later|before|after) (than )?|\bInvalid (\w+ ){1,3}(value|type|mask)s?\b`), coupling(KindInvalidData)),
	on("user disabled or unlicensed", rx(`is disabled|not a member of (any business unit|the organization|the environment['’]s security group)|no license|not licensed|(has|have) not (yet )?been (fully )?configured for this user|`+noRole), setup(KindUserDisabled)),
	// The SDK's token libraries (ADAL, MSAL) failing before any request reached Dataverse; after the
	// transport rules, since a token request that could not connect says so too.
	on("token library failed", rx(`\b(ADAL|MSAL)\b.{0,40}(error|exception|failed)|(ADAL|Msal)\w*Exception|(error|failed|unable to|could not|cannot) (while )?(requesting|acquiring|acquire|obtaining|obtain|getting|get) (an? |the )?(access |bearer )?token\b`), setup(KindAuthentication)),
	on("Entra ID", rx(`invalid_client|unauthorized_client|invalid_scope|invalid_resource|invalid_grant|interaction_required|client secret keys .*expired|Invalid client secret|Application with identifier .* was not found|token (is |has )?(expired|invalid|not valid)|invalid (access |bearer |security )?token|invalid_token|(access |bearer )token is missing|authentication failed|request is unauthorized with client authentication scheme|resource principal named .{0,200} was not found|from (an )?external identity provider|MSIS\d{4}|OAuthInvalidResourceException`), setup(KindAuthentication)),
	// The SDK's generic sign-in failure; when it quotes its cause ("Error was : …") a rule above decided.
	on("sign-in failed", rx(`Unable to log ?in to Dynamics CRM`), setup(KindAuthentication)),
	on("custom logic", rx(`ISV code aborted|Business Process Error|plug-?in|custom (workflow|action)|InvalidPluginExecutionException|Microsoft\.Crm\.Sandbox|SandboxCodeUnit`), setup(KindCustomLogic)),
}

// privilege is a principal missing a Dataverse privilege, or an action only an administrator's
// role may take ("can only be approved by an Office 365 Global Administrator").
const privilege = `is missing '?prv\S+'? privilege|(missing|lacks?|needs?|requires?|without) (an? |the )?(security )?(role with (the )?)?["'“]?prv[A-Z]\w*["'”]? privileges?|CrmCheckPrivilege failed|SecLib::(CheckPrivilege|AccessCheckEx) failed|does not have \w+ right|(don['’]t|doesn['’]t|do not|does not) have (the )?(required )?\S{0,40} ?privilege|required privilege \(prv\w+\)|(don['’]t|doesn['’]t|do not|does not) have permission to|` +
	`can only be (\w+ ){0,2}by (an? |the )?[\w ]{0,40}?(administrator|admin)s?\b|only (an? |the )?[\w ]{0,30}?administrators? (can|may|is allowed|are allowed)|requires? (the )?(System Administrator|System Customizer|administrator) (role|privilege)s?`

// noRole is a user (or team) with no security role, or no licence, at all.
const noRole = `not been assigned any (roles|licen[cs]e)|needs at least one security role|no (security )?roles (are )?assigned|(does not|doesn['’]t) have any security roles?`

// messageSecurity is WCF refusing the organization service's answer for its security (a token,
// a clock out of step, a certificate), as .NET words it in English and translated; the pointer to
// the inner FaultException, which only that message carries, reads the same in every language.
const messageSecurity = `unsecured or incorrectly secured fault|(inner|intern)\w* FaultException|FaultException intern\w*|error occurred when verifying security for the message|security timestamp is (invalid|stale)|security token could not be (authenticated|authorized)|(SOAP )?security negotiation .{0,300}failed|SecurityNegotiationException|` +
	`ungesicherter oder (falsch|nicht korrekt) gesicherter|non protetto o protetto in modo non corretto|non s[ée]curis[ée]e? ou (mal|incorrectement) s[ée]curis[ée]e?|` +
	`(no seguro|no protegido) o (protegido|asegurado) (incorrectamente|de forma incorrecta)|não (segura|protegida) ou (segura|protegida) incorretamente|onbeveiligde of onjuist beveiligde`

// gateway is a page a gateway or front end answers with when Dataverse behind it failed.
const gateway = `<(!DOCTYPE )?html|\b(502|503|504)\b.{0,40}(Bad Gateway|Service( Temporarily)? Unavailable|Gateway Time-?out)|\bBad Gateway\b|Service Temporarily Unavailable|Gateway Time-?out|The service is unavailable|HTTP Error 50[234]|` +
	`returned an error: \(50[234]\)|upstream connect error|no healthy upstream|(response|reply) from (an? |the )?upstream|upstream (server|service|host) (did not|failed|is unavailable|timed out)|(did not|didn['’]t|failed to) receive a (timely )?response from`

// throttled is Dataverse's (and the Power Platform's) service protection limits, by any of their
// counts: requests, execution time, concurrency.
const throttled = `(Number of|Combined execution time of) .{0,120}exceeded (the )?(allowed )?limit|concurrent requests .{0,60}exceeded|Decrease (the )?number of concurrent requests|` +
	`(exceeded|exceeds|reached) (the |its |your )?(rate|request|API) limit|(rate|request|API) limit (was |has been |is )?(exceeded|reached)|Too ?many ?(concurrent )?requests|RequestsThrottled|request(s)? (was|were|has been|have been) throttled|throttling`

// duplicate is a row Dataverse has already: an alternate key, a duplicate-detection rule, a unique
// index (not a request that names one record twice, which is dvsync's own).
const duplicate = `duplicate key\b|duplicate (record|row) (already )?exists|duplicate records? (were |was )?(found|detected)|duplicate of the current record|(matching|same) key values? already exists?|Entity Key .* violated|Cannot insert duplicate|` +
	`requires that this set of attributes contains unique values|Violation of (UNIQUE|PRIMARY) KEY|unique (constraint|index)|already exists with the same (key|values?)`

// requiredMissing is a write that lacks a value Dataverse requires: a required column, the id of
// a lookup whose table was given, a parameter the message names as null or empty.
const requiredMissing = `Value cannot be null|(can ?not|must not|may not) be (null|empty)|` +
	`Required (field|attribute|column|value|parameter)s? .{0,60}(is|are) (missing|empty|not (set|provided|specified))|(is|are) (a )?required (field|attribute|column)s?\b|` +
	`A value (is required|must be (provided|specified)) for|must be set to a non-null value|must (have|be given) a value|complete the required (steps|fields)|(field|attribute|column)s? .{0,40}(is|are) required\b|` +
	`Expected non[- ]?empty (guid|value|string|id)|\b(ID|Id|identifier|guid) (was|is) (missing|empty)|Guid\.Empty`

// schema is the mapping naming a table, column, key, property or lookup Dataverse does not have.
const schema = `Could not find a property named|undeclared property|Resource not found for the segment|URI segment .* is invalid|Invalid url value .* for lookup property|not a defined key|key in the request URI is not valid|Error identified in Payload|Stream was not readable|Invalid property '.*' was found|untyped value in non-open type|when reading a top-level resource|is not enabled for Web ?Api|` +
	`Could not find (an? )?(entity|attribute|relationship|column|property|table) (with|named)|(entity|attribute|column|relationship|option ?set)\b.{0,80}(does not exist|was not found) in the MetadataCache|(attribute|column) .{0,60} does not exist|is not a (valid|declared) (navigation )?property|` +
	`(entity|table) (doesn['’]t|does not) (contain|have) (an? )?(attribute|column|field|property)|(attribute|column|field|property) '[\w.@]+' (wasn['’]t|was not|is not|could not be|cannot be) found|no (attribute|column|field|property) (named|with (the )?name)|` +
	`Invalid (entity|attribute|column|table|relationship|property) (name|type)\b|` +
	`(table|entity|attribute|column|field) with (the )?(logical |schema )?name '?[\w.]+'? (does not|doesn['’]t) exist|(specified|requested) (table|entity|attribute|column|field|relationship) (does not|doesn['’]t) exist`

// transport is a connection that failed below HTTP, as .NET, Go and Node word it, in the
// languages Windows words socket errors in (Dataverse and its SDKs pass them on translated).
const transport = `forcibly closed|closed the transport stream|remote name could not be resolved|NameResolution|error occurred while receiving the HTTP response|Only one usage of each socket address|Unable to connect to the remote server|(Unexpected )?(response|status) code 0\b|socket operation|connection (was )?reset|ECONNRESET|ECONNREFUSED|ETIMEDOUT|ESOCKETTIMEDOUT|ECONNABORTED|EAI_AGAIN|ENOTFOUND|EHOSTUNREACH|ENETUNREACH|EPIPE|broken pipe|` +
	`No such host is known|no such host|Name or service not known|getaddrinfo|name resolution|` +
	`underlying connection was closed|A connection attempt failed|request to https?://\S+ failed, reason:|` +
	// SQL Server's connection failures, which Dataverse and its TDS endpoint pass on.
	`network-related or instance-specific error|transport-level error|(could not|can ?not|unable to) open a connection to SQL Server|physical connection is not usable|connection is broken and recovery is not possible|` +
	// A TLS peer that could not be verified: a proxy inspecting TLS, an expired or untrusted certificate.
	`certificate (has expired|is not (yet )?valid|verify failed|signed by unknown authority)|unable to (get|verify) (the )?(local )?(issuer|first|leaf)\b|self[- ]signed certificate|x509: |UNABLE_TO_(GET|VERIFY)_\w+|CERT_(HAS_EXPIRED|UNTRUSTED|NOT_YET_VALID)|remote certificate is invalid|trust relationship for the SSL/TLS|SSL/TLS secure channel|` +
	`actively refused|connection refused|SocketException|: EOF\b|GOAWAY|server closed idle connection|use of closed network connection|http2: (client connection lost|stream closed)|` +
	`TLS handshake|SSL connection could not be established|Unable to read data from the transport connection|` +
	`An error occurred while sending the request|unexpected EOF|connection (was )?(closed|aborted|terminated)|` +
	// German, French, Spanish, Portuguese, Dutch, Italian, Polish, Russian, Japanese, Chinese.
	`vom Remotehost geschlossen|zugrunde liegende Verbindung wurde geschlossen|Verbindungsversuch ist fehlgeschlagen|Der angegebene Host ist unbekannt|` +
	`fermée par l'h[ôo]te distant|connexion sous-jacente a été fermée|tentative de connexion a échoué|Hôte inconnu|` +
	`interrupción de una conexión existente|conexión subyacente|intento de conexión|No se puede resolver|` +
	`cancelamento de uma conexão existente|conexão subjacente|tentativa de conexão falhou|Host desconhecido|` +
	`geforceerd (verbroken|gesloten)|onderliggende verbinding is gesloten|verbindingspoging is mislukt|` +
	`interrotta forzatamente dall'host remoto|connessione sottostante|` +
	`zamknięte przez zdalnego hosta|` +
	// The remote name not resolved, the remote server not reached, SQL Server's network error,
	// translated; "SSL/TLS" stays in every language.
	`Remotename konnte nicht aufgel[öo]st werden|nom distant n'a pas pu être résolu|nome remoto não pôde ser resolvido|externe naam kan niet worden omgezet|risolvere il nome remoto|` +
	`Verbindung mit dem Remoteserver|se connecter au serveur distant|conectar con el servidor remoto|conectar-se ao servidor remoto|connettersi al server remoto|verbinding maken met de externe server|` +
	`Netzwerkbezogener oder instanzspezifischer Fehler|erreur liée au réseau ou spécifique à l'instance|error relacionado con la red o específico de la instancia|SSL/TLS|` +
	`принудительно разорвал|` +
	`リモート ホストに強制的に切断|远程主机强迫关闭`

// timeouts is a request that took too long, in the same languages.
const timeouts = `\btime(d ?|-| )?out|Timeout(Exception|Error|Expired)|timeout expired|operation was cancell?ed|task was cancell?ed|deadline exceeded|` +
	`Zeitüberschreitung|Zeitlimit|délai d'attente|d[ée]lai .{0,20}expiré|tiempo de espera|tempo limite|tempo esgotado|` +
	`time-out|verlopen tijd|tempo scaduto|limit czasu|время ожидания|тайм-аут|таймаут|タイムアウト|超时`

// deleteBlocked is a delete refused because other rows refer to the row.
const deleteBlocked = `object you tried to delete is associated with another object|` +
	`cannot be deleted because (it is|it's) (associated|referenced|used|being used)|` +
	`(can ?not|can['’]t|unable to) delete .{0,120}(because|since) .{0,80}(associated|referenced|related|in use|used by|depend)|` +
	`DELETE statement conflicted with the REFERENCE constraint|restrict(ed)? (delete|cascade)|cascade (delete|relationship) .{0,60}(restrict|prevent)|` +
	`is referenced by (another|other) (record|row|object)s?|(being used|in use|used) (by|in) .{0,60}(cannot|can['’]t|can not) be deleted|could not be deleted because of an association|(can ?not|can['’]t|unable to) delete .{0,80}(because it has|which (owns|has)|that (owns|has)) `

// stateConflict is a write refused because of the row's state or its parent's.
const stateConflict = `is not in a state that allows|` +
	`(associate|link|relate|assign|set|use|add|attach)( to)? (an? |the )?(inactive|closed|deactivated|resolved|cancell?ed|completed) (record|row|parent|\w+)\b|` +
	`(record|row|parent|target)\b[^.]{0,60}\b(is|was) (currently )?(inactive|deactivated|closed)\b|can ?not be used to set the state of|(status|state) of the \w+ does not allow|` +
	`already (been )?(resolved|closed|cancell?ed|completed|fulfilled|inactive|deactivated|won|lost|invoiced|submitted|approved|activated)|` +
	`(record|row|entity|object|case|quote|order|invoice|opportunity|incident|contract|activity) (is|was) (closed|inactive|read[- ]?only|resolved|cancell?ed|not editable)|` +
	`(cannot|can['’]t|can not|unable to) be (modified|updated|edited|changed|saved) because (it|the record|its parent|the parent .{0,40}) is|` +
	`because it is read[- ]?only|is read[- ]?only and cannot be|record is read[- ]?only|parent .{0,60}(is not editable|is read[- ]?only|is inactive|is closed|not in an? (editable|active) state)|` +
	`(can ?not|can['’]t|unable to) (update|edit|modify|change) (a |an |the )?(closed|inactive|resolved|cancell?ed|completed|deactivated|read[- ]?only|fulfilled|won|lost|active|published|activated)\b|` +
	// A state a plain update cannot set: Dataverse names the request that does ("use the CloseQuoteRequest").
	`(status|state)( code| reason)? (cannot|can['’]t|can not) be (changed|set) to .{0,80}\buse (the )?\w+ ?Request\b|` +
	`\b(quote|order|invoice|salesorder|opportunity)\b .{0,60}(is|has been) (active|closed|won|lost|fulfilled|invoiced|revised|cancell?ed)|` +
	`(quote|order|invoice|contract) .{0,40}(cannot|can['’]t) be (edited|updated|modified|revised|activated|deleted)|` +
	`not valid (state|status)( code)? transition|invalid state (code|transition)|` +
	`(Deactivated|inactive|disabled|closed) (object|record|row|parent)s? (cannot|can['’]t|can not)|under an? (disabled|inactive|deactivated|closed) parent|because it is in (an? )?\w+ state|` +
	`The entity is inactive|Cannot (update|perform this operation on) an inactive|not in (an? )?(active|editable|draft|open) state|record is inactive|is in an inactive state`

// outOfRange is a value outside what the column takes: dates before 1753 (1900 for date-only),
// integers, decimals and money outside their minimum and maximum, text longer than the column.
const outOfRange = `exceeded the maximum allowed length|is outside (the|its) (valid|supported|allowed|permitted) range|contains one or more invalid characters|` +
	`SqlDateTime overflow|1/1/1753|1753-01-01|January 1, 1753|date.{0,40}(is )?(out of|outside the) (the )?(valid |supported )?range|` +
	`(less|greater|smaller|larger|lower|higher) than the (minimum|maximum)( allowed| permitted)? (value|date|amount|length)|` +
	`(minimum|maximum) (allowed )?(value|length|amount) (for|of) .{0,80}(is|was) (exceeded|not met)|` +
	`(value|amount) .{0,60}(must be|should be) (between|less than|greater than|at (most|least))|` +
	`Arithmetic overflow|(less|greater|smaller|larger|lower|higher) than (the )?(minimum|maximum|min|max)|m[ia]n[iu]mum value supported|Expected value between|too large or too small for an? (Int32|Int64|Decimal|Double)|` +
	`String or binary data would be truncated|exceeds the maximum length|is (too long|longer than)`

// wrongType is a value of a type the column does not take, or one that does not convert.
const wrongType = `Cannot convert the literal|Invalid type for (the )?[\w ]{1,40}\bvalue\b|Cannot convert a primitive value|was not recognized as a valid (Edm\.|DateTime|date|Boolean|number)|` +
	`Incorrect attribute value type|attribute .{0,80}expects (a )?value of type|Invalid cast\b|Could not (cast|convert)\b|Unable to cast (object )?(of type|from)|can ?not be (cast|converted) (to|from|into)|Input string was not in a correct format|` +
	`Guid should contain 32 digits|Unrecognized 'Edm\.\w+' literal|not a valid (Edm\.)?(Guid|DateTime|DateTimeOffset|Decimal|Int32|Int64|Double|Boolean)|` +
	`The value .{0,120} is not valid for|is not a valid value for|type conversion|conversion (of|from) .{0,60} failed|Conversion failed|` +
	`expected type 'Edm\.\w+'|does not match the expected type|` +
	`(date|time|date-time|datetime|number|numeric|decimal|guid|money|currency)[- ]?(format|value) .{0,60}(is )?(invalid|not valid|not recognized)|not in (a|the) (valid|correct|recognized|supported) (date |time |number |numeric )?format`

// placeholderHost is a name lookup failing for a host that is a template's placeholder ("yourorg",
// "<org>"): not a sample company's name such as contoso, which posters put in place of their own.
const placeholderHost = `(remote name could not be resolved|no such host|ENOTFOUND|getaddrinfo|No such host is known|Name or service not known)\W{1,4}(\S*[/@])?(your-?org(anization)?|your-?(environment|instance|tenant)|orgname|<org>|\{org\})\.(crm\d*\.)?dynamics\.com`
