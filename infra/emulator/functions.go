package emulator

import (
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strings"

	"github.com/google/uuid"
)

// The documented functions a preflight needs, answered in the shapes of the Web API reference
// (Microsoft Learn): WhoAmI (WhoAmIResponse), systemusers(<id>)/Microsoft.Dynamics.CRM.
// RetrieveUserPrivileges (RetrieveUserPrivilegesResponse: RolePrivileges of Depth, PrivilegeId,
// BusinessUnitId, PrivilegeName), systemusers(<id>)/Microsoft.Dynamics.CRM.RetrievePrincipalAccess
// (Target=@tid)?@tid={'@odata.id':'accounts(<id>)'} (RetrievePrincipalAccessResponse:
// AccessRights), and EntityDefinitions(LogicalName='…') with Attributes.

var (
	userFunctionRE = regexp.MustCompile(`^systemusers\(([0-9a-fA-F-]{36})\)/Microsoft\.Dynamics\.CRM\.([A-Za-z]+)(?:\((.*)\))?$`)
	definitionRE   = regexp.MustCompile(`^EntityDefinitions\(LogicalName='([^']*)'\)(/Attributes)?$`)
	// An entity reference is JSON; the documented example quotes it with single quotes.
	targetRE = regexp.MustCompile(`^\{\s*['"]@odata\.id['"]\s*:\s*['"](?:.*/)?([A-Za-z_][A-Za-z0-9_]*)\(([0-9a-fA-F-]{36})\)['"]\s*\}$`)
)

// serveFunction answers the functions and metadata routes; it reports whether seg was one. The
// caller holds e.mu.
func (e *Emulator) serveFunction(w http.ResponseWriter, r *http.Request, u *user, seg string) bool {
	if e.serveTeams(w, r, u, seg) {
		return true
	}
	if seg != "WhoAmI" && seg != "WhoAmI()" && seg != "organizations" && !strings.HasPrefix(seg, "systemusers(") && !strings.HasPrefix(seg, "EntityDefinitions") {
		return false
	}
	if r.Method != http.MethodGet {
		writeError(w, r, &apiError{405, "0x0", "The requested resource does not support http method '" + r.Method + "'.", ""})
		return true
	}
	switch {
	case seg == "WhoAmI" || seg == "WhoAmI()":
		writeJSON(w, http.StatusOK, map[string]any{
			"@odata.context": baseURL(r) + apiPath + "$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse",
			"BusinessUnitId": e.businessUnit.String(), "UserId": u.id.String(), "OrganizationId": organizationID.String(),
		})
	case seg == "organizations":
		// The one organization row, with the base currency every environment has.
		org := map[string]any{"organizationid": organizationID.String(), "name": "Emulated environment"}
		if _, ok := e.rows["transactioncurrency"][e.baseCurrencyID]; ok {
			org["_basecurrencyid_value"] = e.baseCurrencyID.String()
		}
		writeJSON(w, http.StatusOK, map[string]any{"@odata.context": baseURL(r) + apiPath + "$metadata#organizations", "value": []any{org}})
	case userFunctionRE.MatchString(seg):
		m := userFunctionRE.FindStringSubmatch(seg)
		target, ok := e.users[uuid.MustParse(m[1])]
		if !ok {
			writeError(w, r, &apiError{404, "0x80040217", fmt.Sprintf("systemuser With Id = %s Does Not Exist", m[1]), "ObjectDoesNotExist"})
			return true
		}
		switch m[2] {
		case "RetrieveUserPrivileges":
			e.retrieveUserPrivileges(w, r, target)
		case "RetrievePrincipalAccess":
			e.retrievePrincipalAccess(w, r, target, m[3])
		default:
			writeError(w, r, errSegment("Microsoft.Dynamics.CRM."+m[2]))
		}
	case definitionRE.MatchString(seg):
		m := definitionRE.FindStringSubmatch(seg)
		ent, ok := e.entities[m[1]]
		if !ok {
			// The message is the platform's; the status is not confirmed against a real response.
			writeError(w, r, &apiError{404, "0x80041102", fmt.Sprintf("The entity with a name = '%s' with namemapping = 'Logical' was not found in the MetadataCache.", m[1]), ""})
			return true
		}
		if m[2] != "" {
			attrs := make([]map[string]any, 0, len(ent.AttributeList))
			for _, a := range ent.AttributeList {
				attrs = append(attrs, attributeMetadata(ent, a))
			}
			writeJSON(w, http.StatusOK, map[string]any{
				"@odata.context": fmt.Sprintf("%s%s$metadata#EntityDefinitions('%s')/Attributes", baseURL(r), apiPath, ent.LogicalName),
				"value":          attrs,
			})
			return true
		}
		writeJSON(w, http.StatusOK, entityMetadata(r, ent))
	default:
		writeError(w, r, errSegment(seg))
	}
	return true
}

// retrieveUserPrivileges lists the privileges the user's role holds, each at the organization's
// depth (an application user's role grants Global access), and those it inherits from its teams'
// roles only at Basic depth, as the function's reference says it returns them.
func (e *Emulator) retrieveUserPrivileges(w http.ResponseWriter, r *http.Request, u *user) {
	privs := []map[string]any{}
	inherited := []string{}
	for p := range e.teamPrivilegesLocked(u) {
		if u.noRole || !u.privileges[p] {
			inherited = append(inherited, p)
		}
	}
	sort.Strings(inherited)
	for _, p := range inherited {
		privs = append(privs, map[string]any{"Depth": "Basic", "PrivilegeId": e.privilegeID(p).String(),
			"BusinessUnitId": e.businessUnit.String(), "PrivilegeName": p})
	}
	if !u.noRole {
		names := make([]string, 0, len(u.privileges))
		for p := range u.privileges {
			names = append(names, p)
		}
		sort.Strings(names)
		for _, p := range names {
			privs = append(privs, map[string]any{"Depth": "Global", "PrivilegeId": e.privilegeID(p).String(),
				"BusinessUnitId": e.businessUnit.String(), "PrivilegeName": p})
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.context": baseURL(r) + apiPath + "$metadata#Microsoft.Dynamics.CRM.RetrieveUserPrivilegesResponse",
		"RolePrivileges": privs,
	})
}

// accessRights are the AccessRights flags in the order of the enum's members, as OData writes
// a flags value.
var accessRights = []struct{ verb, right string }{
	{"Read", "ReadAccess"}, {"Write", "WriteAccess"}, {"Append", "AppendAccess"}, {"AppendTo", "AppendToAccess"},
	{"Create", "CreateAccess"}, {"Delete", "DeleteAccess"}, {"Assign", "AssignAccess"},
}

// retrievePrincipalAccess answers the user's access rights to one row: those its privileges on
// the row's table grant (every row is in the user's business unit and read Global).
func (e *Emulator) retrievePrincipalAccess(w http.ResponseWriter, r *http.Request, u *user, params string) {
	alias, ok := strings.CutPrefix(strings.TrimSpace(params), "Target=")
	if !ok {
		writeError(w, r, errBadRequest("The parameter 'Target' of the function 'RetrievePrincipalAccess' is missing."))
		return
	}
	value := alias
	if strings.HasPrefix(alias, "@") {
		value = r.URL.Query().Get(alias)
	}
	m := targetRE.FindStringSubmatch(value)
	if m == nil {
		writeError(w, r, errBadRequest(fmt.Sprintf("The value of the parameter 'Target' is not an entity reference: %q.", value)))
		return
	}
	ent, ok := e.sets[m[1]]
	if !ok {
		writeError(w, r, errSegment(m[1]))
		return
	}
	id := uuid.MustParse(m[2])
	if _, ok := e.rows[ent.LogicalName][id]; !ok {
		writeError(w, r, errNotFound(ent, id))
		return
	}
	var rights []string
	for _, a := range accessRights {
		if e.holdsLocked(u, privilegeName(a.verb, ent)) {
			rights = append(rights, a.right)
		}
	}
	value = strings.Join(rights, ", ")
	if value == "" {
		value = "None"
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.context": baseURL(r) + apiPath + "$metadata#Microsoft.Dynamics.CRM.RetrievePrincipalAccessResponse",
		"AccessRights":   value,
	})
}

func label(text string) map[string]any {
	l := map[string]any{"Label": text, "LanguageCode": 1033}
	return map[string]any{"LocalizedLabels": []any{l}, "UserLocalizedLabel": l}
}

// entityMetadata is an EntityMetadata as EntityDefinitions(LogicalName='…') returns it, with its
// Attributes when the request expands them.
func entityMetadata(r *http.Request, ent *Entity) map[string]any {
	out := map[string]any{
		"MetadataId": metadataID(ent.LogicalName).String(), "LogicalName": ent.LogicalName, "SchemaName": ent.SchemaName,
		"EntitySetName": ent.EntitySet, "PrimaryIdAttribute": ent.PrimaryID, "PrimaryNameAttribute": ent.PrimaryName,
		"ObjectTypeCode": ent.TypeCode, "DisplayName": label(ent.LocalizedName), "IsCustomEntity": false,
	}
	context := "EntityDefinitions/$entity"
	if strings.Contains(r.URL.Query().Get("$expand"), "Attributes") {
		attrs := make([]map[string]any, 0, len(ent.AttributeList))
		for _, a := range ent.AttributeList {
			attrs = append(attrs, attributeMetadata(ent, a))
		}
		out["Attributes"] = attrs
		context = "EntityDefinitions(Attributes())/$entity"
	}
	if sel := selectOf(r); sel != nil {
		keep := map[string]bool{"MetadataId": true, "Attributes": true}
		for _, s := range sel {
			keep[strings.TrimSpace(s)] = true
		}
		for k := range out {
			if !keep[k] {
				delete(out, k)
			}
		}
	}
	out["@odata.context"] = baseURL(r) + apiPath + "$metadata#" + context
	return out
}

// metadataTypes are the derived AttributeMetadata type and AttributeTypeName of each type.
var metadataTypes = map[AttrType][2]string{
	String: {"StringAttributeMetadata", "StringType"}, Memo: {"MemoAttributeMetadata", "MemoType"},
	Integer: {"IntegerAttributeMetadata", "IntegerType"}, Decimal: {"DecimalAttributeMetadata", "DecimalType"},
	Money: {"MoneyAttributeMetadata", "MoneyType"}, Boolean: {"BooleanAttributeMetadata", "BooleanType"},
	Picklist: {"PicklistAttributeMetadata", "PicklistType"}, State: {"StateAttributeMetadata", "StateType"},
	Status: {"StatusAttributeMetadata", "StatusType"}, Lookup: {"LookupAttributeMetadata", "LookupType"},
	UniqueID: {"UniqueIdentifierAttributeMetadata", "UniqueidentifierType"}, DateTime: {"DateTimeAttributeMetadata", "DateTimeType"},
}

// attributeMetadata is one AttributeMetadata: AttributeType, with MaxLength for strings, Targets
// for lookups, MinValue and MaxValue for numbers.
func attributeMetadata(ent *Entity, a Attribute) map[string]any {
	t := metadataTypes[a.Type]
	required := a.RequiredLevel
	if required == "" {
		required = "None"
	}
	system := a.Name == ent.PrimaryID || a.Name == "createdon" || a.Name == "modifiedon" || a.Name == "versionnumber"
	out := map[string]any{
		"@odata.type": "#Microsoft.Dynamics.CRM." + t[0], "MetadataId": metadataID(ent.LogicalName + "." + a.Name).String(),
		"LogicalName": a.Name, "SchemaName": a.Name, "EntityLogicalName": ent.LogicalName,
		"AttributeType": string(a.Type), "AttributeTypeName": map[string]any{"Value": t[1]},
		"IsPrimaryId": a.Name == ent.PrimaryID, "IsPrimaryName": a.Name == ent.PrimaryName, "IsCustomAttribute": false,
		"IsValidForRead": true, "IsValidForCreate": !system || a.Name == ent.PrimaryID, "IsValidForUpdate": !system,
		"RequiredLevel": map[string]any{"Value": required, "CanBeChanged": true, "ManagedPropertyLogicalName": "canmodifyrequirementlevelsettings"},
	}
	switch a.Type {
	case String, Memo:
		out["MaxLength"] = a.MaxLength
	case Lookup:
		out["Targets"] = a.Targets
	case Integer, Decimal, Money:
		if a.MinValue != nil {
			out["MinValue"] = *a.MinValue
		}
		if a.MaxValue != nil {
			out["MaxValue"] = *a.MaxValue
		}
	}
	return out
}

func metadataID(name string) uuid.UUID {
	return uuid.NewSHA1(uuid.NameSpaceOID, []byte("metadata "+name))
}
