package dataverse

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/dvsync/dvsync/domain"
	"github.com/google/uuid"
)

// The calls a preflight makes: who the integration user is (WhoAmI), which privileges it holds
// (RetrieveUserPrivileges), what Dataverse's metadata says of every mapped entity
// (EntityDefinitions with Attributes), and the organization's base currency.

// WhoAmI asks Dataverse who the caller is.
func (c *Client) WhoAmI(ctx context.Context) (domain.Principal, error) {
	resp, err := c.do(ctx, http.MethodGet, "WhoAmI", "WhoAmI", nil, nil)
	if err != nil {
		return domain.Principal{}, err
	}
	var who struct{ UserId, BusinessUnitId, OrganizationId string }
	if err := json.Unmarshal(resp.body, &who); err != nil {
		return domain.Principal{}, fmt.Errorf("dataverse: WhoAmI: %w", err)
	}
	return domain.Principal{UserID: who.UserId, BusinessUnitID: who.BusinessUnitId, OrganizationID: who.OrganizationId}, nil
}

// UserPrivileges returns the names of the privileges a user holds through its roles.
func (c *Client) UserPrivileges(ctx context.Context, userID string) (map[string]bool, error) {
	path := "systemusers(" + userID + ")/Microsoft.Dynamics.CRM.RetrieveUserPrivileges"
	resp, err := c.do(ctx, http.MethodGet, "systemusers", path, nil, nil)
	if err != nil {
		return nil, err
	}
	var out struct {
		RolePrivileges []struct{ PrivilegeName, Depth string }
	}
	if err := json.Unmarshal(resp.body, &out); err != nil {
		return nil, fmt.Errorf("dataverse: RetrieveUserPrivileges: %w", err)
	}
	held := map[string]bool{}
	for _, p := range out.RolePrivileges {
		held[p.PrivilegeName] = true
	}
	return held, nil
}

// codeEntityNotInMetadata is Dataverse's answer for EntityDefinitions of an entity it lacks.
const codeEntityNotInMetadata = "0x80041102"

// Entity returns the metadata of one entity and its attributes; an entity Dataverse does not have
// is Exists false, not an error.
func (c *Client) Entity(ctx context.Context, logicalName string) (domain.EntityInfo, error) {
	path := "EntityDefinitions(LogicalName='" + url.PathEscape(logicalName) + "')?$select=LogicalName,SchemaName&$expand=Attributes"
	resp, err := c.do(ctx, http.MethodGet, "EntityDefinitions", path, nil, nil)
	var dv *Error
	if errors.As(err, &dv) && dv.Status == http.StatusNotFound && domain.NormalizeCode(dv.Code) == codeEntityNotInMetadata {
		return domain.EntityInfo{}, nil
	}
	if err != nil {
		return domain.EntityInfo{}, err
	}
	var out struct {
		SchemaName string
		Attributes []struct {
			LogicalName, AttributeType string
			MaxLength                  *int
			Targets                    []string
		}
	}
	if err := json.Unmarshal(resp.body, &out); err != nil {
		return domain.EntityInfo{}, fmt.Errorf("dataverse: EntityDefinitions %s: %w", logicalName, err)
	}
	info := domain.EntityInfo{Exists: true, SchemaName: out.SchemaName, Attributes: map[string]domain.AttributeInfo{}}
	for _, a := range out.Attributes {
		ai := domain.AttributeInfo{Type: a.AttributeType, Targets: a.Targets}
		if a.MaxLength != nil {
			ai.MaxLength = *a.MaxLength
		}
		info.Attributes[a.LogicalName] = ai
	}
	return info, nil
}

// BaseCurrency returns the ISO code of the organization's base currency.
func (c *Client) BaseCurrency(ctx context.Context) (string, error) {
	orgs, err := c.Query(ctx, "organizations", url.Values{"$select": {"_basecurrencyid_value"}})
	if err != nil {
		return "", err
	}
	if len(orgs) == 0 {
		return "", errors.New("dataverse: no organization row")
	}
	id, err := uuid.Parse(fmt.Sprint(orgs[0]["_basecurrencyid_value"]))
	if err != nil {
		return "", fmt.Errorf("dataverse: the organization names no base currency: %w", err)
	}
	row, err := c.Row(ctx, domain.RowRef{EntitySet: "transactioncurrencies", IDAttribute: "transactioncurrencyid", ID: id}, "isocurrencycode")
	if err != nil {
		return "", err
	}
	code, _ := row["isocurrencycode"].(string)
	return code, nil
}

// list reads a collection at path (a navigation property, say), under label in metrics.
func (c *Client) list(ctx context.Context, label, path, sel string) ([]map[string]any, error) {
	resp, err := c.do(ctx, http.MethodGet, label, path+"?$select="+sel, nil, nil)
	if err != nil {
		return nil, err
	}
	var page struct {
		Value []map[string]any `json:"value"`
	}
	if err := json.Unmarshal(resp.body, &page); err != nil {
		return nil, fmt.Errorf("dataverse: %s: %w", label, err)
	}
	return page.Value, nil
}

func roles(rows []map[string]any) []domain.Role {
	out := make([]domain.Role, 0, len(rows))
	for _, r := range rows {
		// A predefined role (System Administrator, Basic User, …) is made from a role template.
		out = append(out, domain.Role{ID: str(r["roleid"]), Name: str(r["name"]), Predefined: r["_roletemplateid_value"] != nil})
	}
	return out
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// Roles reads how a user holds its privileges: its own roles (systemuserroles_association, which
// needs prvReadRole), its teams (teammembership_association, prvReadTeam), and each team's roles
// and privileges (teamroles_association, RetrieveTeamPrivileges). An access team holds no role
// and is listed without.
func (c *Client) Roles(ctx context.Context, userID string) ([]domain.Role, []domain.Team, error) {
	rows, err := c.list(ctx, "systemusers", "systemusers("+userID+")/systemuserroles_association", "roleid,name,_roletemplateid_value")
	if err != nil {
		return nil, nil, fmt.Errorf("dataverse: the user's roles: %w", err)
	}
	own := roles(rows)
	rows, err = c.list(ctx, "systemusers", "systemusers("+userID+")/teammembership_association", "teamid,name,teamtype,isdefault")
	if err != nil {
		return nil, nil, fmt.Errorf("dataverse: the user's teams: %w", err)
	}
	teams := make([]domain.Team, 0, len(rows))
	for _, r := range rows {
		t := domain.Team{ID: str(r["teamid"]), Name: str(r["name"]), Default: r["isdefault"] == true}
		if n, ok := r["teamtype"].(float64); ok {
			t.Type = int(n)
		}
		if _, err := uuid.Parse(t.ID); err != nil {
			return nil, nil, fmt.Errorf("dataverse: a team of the user has no id: %w", err)
		}
		if t.Type != domain.TeamAccess {
			rs, err := c.list(ctx, "teams", "teams("+t.ID+")/teamroles_association", "roleid,name,_roletemplateid_value")
			if err != nil {
				return nil, nil, fmt.Errorf("dataverse: the roles of team %s: %w", t.Name, err)
			}
			t.Roles = roles(rs)
			if len(t.Roles) > 0 {
				if t.Privileges, err = c.TeamPrivileges(ctx, t.ID); err != nil {
					return nil, nil, fmt.Errorf("dataverse: the privileges of team %s: %w", t.Name, err)
				}
			}
		}
		teams = append(teams, t)
	}
	return own, teams, nil
}

// TeamPrivileges returns the names of the privileges a team holds through its roles.
func (c *Client) TeamPrivileges(ctx context.Context, teamID string) (map[string]bool, error) {
	resp, err := c.do(ctx, http.MethodGet, "teams", "teams("+teamID+")/Microsoft.Dynamics.CRM.RetrieveTeamPrivileges", nil, nil)
	if err != nil {
		return nil, err
	}
	var out struct {
		RolePrivileges []struct{ PrivilegeName string }
	}
	if err := json.Unmarshal(resp.body, &out); err != nil {
		return nil, fmt.Errorf("dataverse: RetrieveTeamPrivileges: %w", err)
	}
	held := map[string]bool{}
	for _, p := range out.RolePrivileges {
		held[p.PrivilegeName] = true
	}
	return held, nil
}

// Currencies returns every currency of the environment by id: its ISO code and whether it is
// active (an environment has a handful).
func (c *Client) Currencies(ctx context.Context) (map[uuid.UUID]domain.CoupledCurrency, error) {
	rows, err := c.Query(ctx, "transactioncurrencies", url.Values{"$select": {"transactioncurrencyid,isocurrencycode,statecode"}})
	if err != nil {
		return nil, err
	}
	out := map[uuid.UUID]domain.CoupledCurrency{}
	for _, r := range rows {
		id, err := uuid.Parse(str(r["transactioncurrencyid"]))
		if err != nil {
			continue
		}
		state, _ := r["statecode"].(float64)
		out[id] = domain.CoupledCurrency{RowID: id.String(), Code: str(r["isocurrencycode"]), Found: true, Active: state == 0}
	}
	return out, nil
}

// PreflightOptions is what a preflight checks beyond Dataverse's own answers.
type PreflightOptions struct {
	// LocalCurrency is the source's local currency (DVSYNC_LOCAL_CURRENCY), compared with the
	// base currency when set.
	LocalCurrency string
	// CurrencyCouplings are the coupled records of the currency table, whose rows must be active;
	// CouplingsSkipped says why they are not known (the ledger did not answer): that part is then
	// skipped, and nothing it would check is resolved.
	CurrencyCouplings []domain.Coupling
	CouplingsSkipped  string
}

// Preflight gathers what the mappings need from Dataverse and compares it (domain.Preflight). An
// application restricted from the API is one gap, not an error: no other check can run then.
// Roles and teams the user may not read leave the advice neutral, with a warning, and fail
// nothing.
func (c *Client) Preflight(ctx context.Context, ms domain.Mappings, opt PreflightOptions) (domain.PreflightReport, error) {
	who, err := c.WhoAmI(ctx)
	var dv *Error
	if errors.As(err, &dv) && domain.NormalizeCode(dv.Code) == "0x80095ffc" {
		return domain.AppRestrictedReport(dv), nil
	}
	if err != nil {
		return domain.PreflightReport{}, fmt.Errorf("dataverse: preflight: %w", err)
	}
	in := domain.PreflightInput{Principal: who, Entities: map[string]domain.EntityInfo{}, LocalCurrency: opt.LocalCurrency}
	if in.Privileges, err = c.UserPrivileges(ctx, who.UserID); err != nil {
		return domain.PreflightReport{}, fmt.Errorf("dataverse: preflight: %w", err)
	}
	if in.Principal.Roles, in.Principal.Teams, err = c.Roles(ctx, who.UserID); err != nil {
		if ctx.Err() != nil {
			return domain.PreflightReport{}, fmt.Errorf("dataverse: preflight: %w", err)
		}
		in.Principal.Roles, in.Principal.Teams, in.Principal.RolesUnknown = nil, nil, true
		in.Warnings = append(in.Warnings, "the roles and teams of the integration user could not be read (it needs prvReadRole and "+
			"prvReadTeam for that), so resolutions name no role or team: "+err.Error())
	}
	for _, t := range ms.Tables() {
		m := ms[t]
		if _, done := in.Entities[m.Entity]; done {
			continue
		}
		if in.Entities[m.Entity], err = c.Entity(ctx, m.Entity); err != nil {
			return domain.PreflightReport{}, fmt.Errorf("dataverse: preflight: %w", err)
		}
	}
	// The base currency is reported so that a mismatch with the source's currencies is visible;
	// a Dataverse that does not say leaves it blank (and uncompared) rather than failing the check.
	in.BaseCurrency, _ = c.BaseCurrency(ctx)
	in.CoupledSkipped = opt.CouplingsSkipped
	if len(opt.CurrencyCouplings) > 0 && in.CoupledSkipped == "" {
		all, err := c.Currencies(ctx)
		if err != nil {
			return domain.PreflightReport{}, fmt.Errorf("dataverse: preflight: the currencies: %w", err)
		}
		for _, cp := range opt.CurrencyCouplings {
			if cp.RowID == uuid.Nil {
				continue
			}
			cur := all[cp.RowID]
			cur.Table, cur.Key, cur.RowID = cp.Table, cp.Key, cp.RowID.String()
			in.Coupled = append(in.Coupled, cur)
		}
	}
	return domain.Preflight(ms, in), nil
}
