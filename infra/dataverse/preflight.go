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

// Preflight gathers what the mappings need from Dataverse and compares it (domain.Preflight). An
// application restricted from the API is one gap, not an error: no other check can run then.
func (c *Client) Preflight(ctx context.Context, ms domain.Mappings) (domain.PreflightReport, error) {
	who, err := c.WhoAmI(ctx)
	var dv *Error
	if errors.As(err, &dv) && domain.NormalizeCode(dv.Code) == "0x80095ffc" {
		return domain.PreflightReport{Gaps: []domain.PreflightGap{{Key: "application", Failure: domain.AppRestricted(dv)}}, Checked: 1}, nil
	}
	if err != nil {
		return domain.PreflightReport{}, fmt.Errorf("dataverse: preflight: %w", err)
	}
	in := domain.PreflightInput{Principal: who, Entities: map[string]domain.EntityInfo{}}
	if in.Privileges, err = c.UserPrivileges(ctx, who.UserID); err != nil {
		return domain.PreflightReport{}, fmt.Errorf("dataverse: preflight: %w", err)
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
	// a Dataverse that does not say leaves it blank rather than failing the check.
	in.BaseCurrency, _ = c.BaseCurrency(ctx)
	return domain.Preflight(ms, in), nil
}
