package emulator_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/uuid"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/dvsync/dvsync/infra/emulator"
)

func privilegeNames(out map[string]any) map[string]string {
	got := map[string]string{}
	for _, p := range out["RolePrivileges"].([]any) {
		m := p.(map[string]any)
		got[m["PrivilegeName"].(string)] = m["Depth"].(string)
	}
	return got
}

// A user whose own role is taken away works through an owner team's role: it inherits the role's
// privileges (listed at Basic depth by RetrieveUserPrivileges), the reads of its roles and teams
// answer in the Web API's shapes, a privilege revoked from the team's role is refused in
// Dataverse's form, and the reads of roles and teams need prvReadRole and prvReadTeam.
func TestTeamRolesGiveTheirMembersPrivileges(t *testing.T) {
	a := newAPI(t)
	user := emulator.DefaultApp.UserID
	team, roles, err := a.emu.AddTeam(emulator.TeamSpec{Name: "Sales integration", Type: emulator.TeamOwner, Members: []uuid.UUID{user},
		Roles: []emulator.RoleSpec{{Name: "Basic User", Predefined: true, Privileges: []string{"prvReadAccount"}}, {Name: "DVSync", Privileges: []string{"*"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.emu.AddTeam(emulator.TeamSpec{Name: "Shares", Type: emulator.TeamAccess, Roles: []emulator.RoleSpec{{Name: "x"}}}); err == nil {
		t.Fatal("an access team was given a role")
	}
	if err := a.emu.SetRoleAssigned(user, false); err != nil {
		t.Fatal(err)
	}
	if resp, out := a.do("POST", "accounts", `{"name":"Through the team"}`); resp.StatusCode != 204 {
		t.Fatalf("create through the team's role: %d %v", resp.StatusCode, out)
	}
	resp, out := a.do("GET", fmt.Sprintf("systemusers(%s)/Microsoft.Dynamics.CRM.RetrieveUserPrivileges", user), "")
	if got := privilegeNames(out); resp.StatusCode != 200 || got["prvCreateAccount"] != "Basic" || got["prvReadTeam"] != "" {
		t.Fatalf("RetrieveUserPrivileges without an own role: %d %v", resp.StatusCode, got)
	}
	resp, out = a.do("GET", fmt.Sprintf("systemusers(%s)/systemuserroles_association?$select=name,_roletemplateid_value", user), "")
	if resp.StatusCode != 403 {
		t.Fatalf("the own roles of a user who reads roles only through a team without prvReadRole: %d %v", resp.StatusCode, out)
	}
	if err := a.emu.SetRoleAssigned(user, true); err != nil {
		t.Fatal(err)
	}
	resp, out = a.do("GET", fmt.Sprintf("systemusers(%s)/systemuserroles_association?$select=name,_roletemplateid_value", user), "")
	if v, _ := out["value"].([]any); resp.StatusCode != 200 || len(v) != 1 || !strings.Contains(fmt.Sprint(out["@odata.context"]), "$metadata#roles") {
		t.Fatalf("own roles: %d %v", resp.StatusCode, out)
	}
	resp, out = a.do("GET", fmt.Sprintf("systemusers(%s)/teammembership_association?$select=name,teamtype,isdefault", user), "")
	teams, _ := out["value"].([]any)
	if resp.StatusCode != 200 || len(teams) != 2 || teams[0].(map[string]any)["isdefault"] != true ||
		teams[1].(map[string]any)["name"] != "Sales integration" || teams[1].(map[string]any)["teamtype"] != float64(0) {
		t.Fatalf("teams: %d %v", resp.StatusCode, out)
	}
	resp, out = a.do("GET", fmt.Sprintf("teams(%s)/teamroles_association?$select=name,_roletemplateid_value", team), "")
	tr, _ := out["value"].([]any)
	if resp.StatusCode != 200 || len(tr) != 2 || tr[0].(map[string]any)["_roletemplateid_value"] == nil || tr[1].(map[string]any)["_roletemplateid_value"] != nil {
		t.Fatalf("team roles: %d %v", resp.StatusCode, out)
	}
	resp, out = a.do("GET", fmt.Sprintf("teams(%s)/Microsoft.Dynamics.CRM.RetrieveTeamPrivileges", team), "")
	if got := privilegeNames(out); resp.StatusCode != 200 || got["prvCreateAccount"] != "Global" {
		t.Fatalf("RetrieveTeamPrivileges: %d %v", resp.StatusCode, got)
	}
	if resp, out := a.do("GET", fmt.Sprintf("teams(%s)/teamroles_association", uuid.New()), ""); resp.StatusCode != 404 || errCode(out) != "0x80040217" {
		t.Fatalf("an unknown team: %d %v", resp.StatusCode, out)
	}

	// Without its own role again, the team's role is all it has: a revoke there is refused.
	if err := a.emu.SetRoleAssigned(user, false); err != nil {
		t.Fatal(err)
	}
	if err := a.emu.SetRolePrivilege(roles[1], "prvCreateAccount", false); err != nil {
		t.Fatal(err)
	}
	resp, out = a.do("POST", "accounts", `{"name":"Refused"}`)
	if resp.StatusCode != 403 || errCode(out) != "0x80040220" || !strings.Contains(errMessage(out), "is missing prvCreateAccount privilege") {
		t.Fatalf("create after the team role lost prvCreateAccount: %d %v", resp.StatusCode, out)
	}
	// The reads of roles and teams need their privileges.
	if err := a.emu.SetRolePrivilege(roles[1], "prvReadTeam", false); err != nil {
		t.Fatal(err)
	}
	resp, out = a.do("GET", fmt.Sprintf("systemusers(%s)/teammembership_association", user), "")
	if resp.StatusCode != 403 || errCode(out) != "0x80040220" || !strings.Contains(errMessage(out), "prvReadTeam") || !strings.Contains(errMessage(out), "entity 'team'") {
		t.Fatalf("teams without prvReadTeam: %d %v", resp.StatusCode, out)
	}

	// The admin endpoints do the same over HTTP, and the state survives a save and a load.
	post := func(path, body string) int {
		t.Helper()
		resp, err := http.Post(a.srv.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post("/_emulator/roles/"+roles[1].String()+"/privileges", `{"grant":["prvCreateAccount"]}`); code != 204 {
		t.Fatalf("grant: %d", code)
	}
	if code := post("/_emulator/teams", `{"name":"Sales integration","type":0}`); code != 409 {
		t.Fatalf("a second team of that name: %d", code)
	}
	if code := post("/_emulator/teams", `{"name":"Integration group","type":2,"members":["`+user.String()+`"]}`); code != 201 {
		t.Fatalf("an Entra group team: %d", code)
	}
	var saved bytes.Buffer
	if err := a.emu.Save(&saved); err != nil {
		t.Fatal(err)
	}
	again := emulator.New()
	if err := again.Load(&saved); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(again.Handler())
	t.Cleanup(srv.Close)
	cfg := clientcredentials.Config{ClientID: emulator.DefaultApp.ClientID, ClientSecret: emulator.DefaultApp.ClientSecret,
		TokenURL: srv.URL + "/" + emulator.DefaultTenant + "/oauth2/v2.0/token"}
	b := &api{t: t, srv: srv, emu: again, c: cfg.Client(context.Background())}
	resp, out = b.do("POST", "accounts", `{"name":"After the load"}`)
	if resp.StatusCode != 204 {
		t.Fatalf("create through the team's role after a load: %d %v", resp.StatusCode, out)
	}
}

func errCode(out map[string]any) string {
	e, _ := out["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

func errMessage(out map[string]any) string {
	e, _ := out["error"].(map[string]any)
	s, _ := e["message"].(string)
	return s
}
