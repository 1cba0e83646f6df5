package domain

import "strings"

// scopeHint is the usual cause of an Entra ID failure: dvsync asks for a token of the scope
// <DATAVERSE_URL>/.default, so a URL that is not the environment's asks for a resource the tenant
// does not know.
const scopeHint = "dvsync asks Entra ID for a token of the scope https://<org>.crm.dynamics.com/.default, built from DATAVERSE_URL: " +
	"it must be the environment URL alone (as the Power Platform admin center shows it, no /api/data path), in the tenant of DATAVERSE_TENANT_ID."

// entraFamilies says what an AADSTS code asks of the administrator, by family. Sources: Microsoft
// Learn, "Microsoft Entra authentication and authorization error codes"
// (https://learn.microsoft.com/entra/identity-platform/reference-error-codes).
var entraFamilies = []struct {
	codes  []string
	advice string
}{
	{[]string{"500011", "500014", "650057", "90009"}, // the resource (the scope) is unknown in the tenant
		"Entra ID does not know the resource dvsync asked for: DATAVERSE_URL is most likely not the environment's URL, or the environment is in another tenant."},
	{[]string{"70011", "1002012", "28000", "28002", "28003"}, // the scope is malformed
		"Entra ID refused the scope dvsync asked for: DATAVERSE_URL is most likely not the bare environment URL (a path, a typo or a trailing segment)."},
	{[]string{"7000215", "7000222", "7000216", "700027", "700024"}, // the app's credential
		"The client secret (or certificate) is wrong or expired: create a new secret for the app registration and set its value (not its id) as DATAVERSE_CLIENT_SECRET."},
	{[]string{"700016", "7000112"}, // the app is not in the tenant, or disabled
		"The app registration was not found in the tenant, or is disabled: check that DATAVERSE_CLIENT_ID and DATAVERSE_TENANT_ID belong together."},
	{[]string{"90002", "900023", "50128"}, // the tenant
		"The tenant is wrong: check DATAVERSE_TENANT_ID (the directory id of the tenant that holds the environment)."},
	{[]string{"65001", "650052", "50105", "65004"}, // consent or assignment
		"The app lacks consent or assignment in the tenant: have an administrator grant consent to the app registration."},
	{[]string{"53003", "53000", "530003", "50158"}, // conditional access
		"A Conditional Access policy blocked the app's sign-in: have the Entra ID administrator exclude the workload identity or allow its location."},
}

// entraResolution is the resolution of an authentication failure with the AADSTS code's advice
// when it names one; the scope and DATAVERSE_URL are always named, being the usual cause.
func entraResolution(aadsts string) string {
	for _, f := range entraFamilies {
		for _, c := range f.codes {
			if c == aadsts {
				return f.advice + " " + scopeHint
			}
		}
	}
	var b strings.Builder
	if aadsts != "" {
		b.WriteString("Entra ID refused the token request (AADSTS" + aadsts + "). ")
	}
	b.WriteString("Check the tenant, client id and client secret (or certificate) dvsync uses, that the secret has not expired, " +
		"and that an application user exists in Dataverse for the app. ")
	b.WriteString(scopeHint)
	return b.String()
}
