package emulator

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strings"

	"github.com/google/uuid"
)

// Teams and the security roles they hold, as Dataverse has them: an owner team (teamtype 0) or a
// Microsoft Entra ID group team (2) holds roles, and its members inherit their privileges at
// Basic (user) depth; an access team (1) holds none. Every business unit has a default team
// (isdefault) whose members are all of its users. The reads a preflight makes are answered in the
// Web API's shapes: systemusers(<id>)/systemuserroles_association and
// systemusers(<id>)/teammembership_association, teams(<id>)/teamroles_association, and
// teams(<id>)/Microsoft.Dynamics.CRM.RetrieveTeamPrivileges (RetrieveTeamPrivilegesResponse:
// RolePrivileges). Reading roles needs prvReadRole, reading teams prvReadTeam (403 0x80040220).

// Team types, as team.teamtype has them.
const (
	TeamOwner      = 0
	TeamAccess     = 1
	TeamEntraGroup = 2
)

// SecurityRole is a security role; a predefined one has a role template (Basic User, …).
type SecurityRole struct {
	ID         uuid.UUID
	Name       string
	Predefined bool
	Privileges map[string]bool
}

// EmulatedTeam is a team, its members and the roles it holds.
type EmulatedTeam struct {
	ID      uuid.UUID
	Name    string
	Type    int
	Default bool
	Members map[uuid.UUID]bool // of a default team: every user
	Roles   []uuid.UUID
}

// teamState is the emulator's teams and their roles; Save keeps it (exported for gob).
type teamState struct {
	Roles map[uuid.UUID]*SecurityRole
	Teams map[uuid.UUID]*EmulatedTeam
}

// teamReads are the privileges the preflight's reads of roles and teams need; application users
// hold them unless revoked.
var teamReads = []string{"prvReadRole", "prvReadTeam"}

// roleEntity and teamEntity name the role and team tables in privilege errors.
var (
	roleEntity = &Entity{LogicalName: "role", SchemaName: "Role", LocalizedName: "Security Role", EntitySet: "roles", TypeCode: 1036}
	teamEntity = &Entity{LogicalName: "team", SchemaName: "Team", LocalizedName: "Team", EntitySet: "teams", TypeCode: 9}
)

// newTeamState is a business unit's teams as provisioned: its default team, with no role.
func newTeamState(businessUnit uuid.UUID) *teamState {
	id := uuid.NewSHA1(businessUnit, []byte("default team"))
	return &teamState{Roles: map[uuid.UUID]*SecurityRole{}, Teams: map[uuid.UUID]*EmulatedTeam{
		id: {ID: id, Name: "Emulated environment", Type: TeamOwner, Default: true, Members: map[uuid.UUID]bool{}},
	}}
}

// grantTeamReadsLocked gives a new application user the reads of roles and teams.
func grantTeamReadsLocked(u *user) {
	for _, p := range teamReads {
		u.privileges[p] = true
	}
}

// TeamSpec is a team to add and the roles it holds, each new.
type TeamSpec struct {
	Name    string      `json:"name"`
	Type    int         `json:"type"`
	Members []uuid.UUID `json:"members"`
	Roles   []RoleSpec  `json:"roles"`
}

// RoleSpec is a new security role and its privileges (prv<Verb><SchemaName>; "*" is every
// privilege on every table, as an application user's role has).
type RoleSpec struct {
	Name       string   `json:"name"`
	Predefined bool     `json:"predefined"`
	Privileges []string `json:"privileges"`
}

// ErrTeamExists is AddTeam's answer for a name a team has already.
var ErrTeamExists = errors.New("emulator: a team with this name exists")

// AddTeam adds a team with its members and new roles, and returns the team's and the roles' ids.
// An access team cannot hold roles, as in Dataverse.
func (e *Emulator) AddTeam(spec TeamSpec) (uuid.UUID, []uuid.UUID, error) {
	if strings.TrimSpace(spec.Name) == "" {
		return uuid.Nil, nil, errors.New("emulator: a team needs a name")
	}
	if spec.Type != TeamOwner && spec.Type != TeamAccess && spec.Type != TeamEntraGroup {
		return uuid.Nil, nil, fmt.Errorf("emulator: team type %d is not 0 (owner), 1 (access) or 2 (Entra ID group)", spec.Type)
	}
	if spec.Type == TeamAccess && len(spec.Roles) > 0 {
		return uuid.Nil, nil, errors.New("emulator: an access team cannot hold security roles")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, t := range e.teams.Teams {
		if strings.EqualFold(t.Name, spec.Name) {
			return uuid.Nil, nil, fmt.Errorf("%w: %q", ErrTeamExists, spec.Name)
		}
	}
	t := &EmulatedTeam{ID: uuid.NewSHA1(e.businessUnit, []byte("team "+spec.Name)), Name: spec.Name, Type: spec.Type, Members: map[uuid.UUID]bool{}}
	for _, m := range spec.Members {
		if e.users[m] == nil {
			return uuid.Nil, nil, fmt.Errorf("emulator: no user %s", m)
		}
		t.Members[m] = true
	}
	var roles []uuid.UUID
	for _, rs := range spec.Roles {
		r := &SecurityRole{ID: uuid.NewSHA1(t.ID, []byte("role "+rs.Name)), Name: rs.Name, Predefined: rs.Predefined, Privileges: map[string]bool{}}
		for _, p := range rs.Privileges {
			if p == "*" {
				for _, ent := range e.entities {
					for _, v := range Verbs {
						r.Privileges[privilegeName(v, ent)] = true
					}
				}
				continue
			}
			if !strings.HasPrefix(p, "prv") {
				return uuid.Nil, nil, fmt.Errorf("emulator: %q is not a privilege name (prv<Verb><Entity>)", p)
			}
			r.Privileges[p] = true
		}
		e.teams.Roles[r.ID] = r
		t.Roles = append(t.Roles, r.ID)
		roles = append(roles, r.ID)
	}
	e.teams.Teams[t.ID] = t
	e.writes.Add(1)
	return t.ID, roles, nil
}

// SetRolePrivilege grants or revokes a privilege of a team's security role.
func (e *Emulator) SetRolePrivilege(roleID uuid.UUID, privilege string, granted bool) error {
	if !strings.HasPrefix(privilege, "prv") {
		return fmt.Errorf("emulator: %q is not a privilege name (prv<Verb><Entity>)", privilege)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	r := e.teams.Roles[roleID]
	if r == nil {
		return fmt.Errorf("emulator: no role %s", roleID)
	}
	if granted {
		r.Privileges[privilege] = true
	} else {
		delete(r.Privileges, privilege)
	}
	e.writes.Add(1)
	return nil
}

// teamsOfLocked are the teams a user is a member of, the default team first, then by name.
func (e *Emulator) teamsOfLocked(u *user) []*EmulatedTeam {
	var out []*EmulatedTeam
	for _, t := range e.teams.Teams {
		if t.Default || t.Members[u.id] {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Default != out[j].Default {
			return out[i].Default
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// teamPrivilegesLocked are the privileges a user inherits from its teams' roles.
func (e *Emulator) teamPrivilegesLocked(u *user) map[string]bool {
	out := map[string]bool{}
	for _, t := range e.teamsOfLocked(u) {
		if t.Type == TeamAccess {
			continue
		}
		for _, id := range t.Roles {
			for p := range e.teams.Roles[id].Privileges {
				out[p] = true
			}
		}
	}
	return out
}

// hasRoleLocked reports whether a user holds any role, its own or through a team: one with none
// is refused every request (0x80042f09).
func (e *Emulator) hasRoleLocked(u *user) bool {
	if !u.noRole {
		return true
	}
	for _, t := range e.teamsOfLocked(u) {
		if t.Type != TeamAccess && len(t.Roles) > 0 {
			return true
		}
	}
	return false
}

// holdsLocked reports whether a user holds a privilege through its own role or a team's.
func (e *Emulator) holdsLocked(u *user, privilege string) bool {
	if !u.noRole && u.privileges[privilege] {
		return true
	}
	return e.teamPrivilegesLocked(u)[privilege]
}

// ownRoleID is the id of an application user's own security role.
func ownRoleID(u *user) uuid.UUID { return uuid.NewSHA1(u.id, []byte("own role")) }

var (
	userNavRE = regexp.MustCompile(`^systemusers\(([0-9a-fA-F-]{36})\)/(systemuserroles_association|teammembership_association)$`)
	teamRE    = regexp.MustCompile(`^teams\(([0-9a-fA-F-]{36})\)/(teamroles_association|Microsoft\.Dynamics\.CRM\.RetrieveTeamPrivileges(?:\(\))?)$`)
)

// serveTeams answers the reads of a user's roles and teams and of a team's roles and
// privileges; it reports whether seg was one. The caller holds e.mu.
func (e *Emulator) serveTeams(w http.ResponseWriter, r *http.Request, u *user, seg string) bool {
	um, tm := userNavRE.FindStringSubmatch(seg), teamRE.FindStringSubmatch(seg)
	if um == nil && tm == nil {
		return false
	}
	if r.Method != http.MethodGet {
		writeError(w, r, &apiError{405, "0x0", "The requested resource does not support http method '" + r.Method + "'.", ""})
		return true
	}
	if um != nil {
		target := e.users[uuid.MustParse(um[1])]
		if target == nil {
			writeError(w, r, &apiError{404, "0x80040217", fmt.Sprintf("systemuser With Id = %s Does Not Exist", um[1]), "ObjectDoesNotExist"})
			return true
		}
		if um[2] == "systemuserroles_association" {
			if !e.canRead(w, r, u, "prvReadRole", roleEntity) {
				return true
			}
			var roles []map[string]any
			if !target.noRole {
				roles = append(roles, e.roleRow(&SecurityRole{ID: ownRoleID(target), Name: "Application user role " + target.clientID}))
			}
			e.writeCollection(w, r, "roles", roles)
			return true
		}
		if !e.canRead(w, r, u, "prvReadTeam", teamEntity) {
			return true
		}
		rows := []map[string]any{}
		for _, t := range e.teamsOfLocked(target) {
			rows = append(rows, map[string]any{"teamid": t.ID.String(), "name": t.Name, "teamtype": int64(t.Type),
				"isdefault": t.Default, "_businessunitid_value": e.businessUnit.String()})
		}
		e.writeCollection(w, r, "teams", rows)
		return true
	}
	t := e.teams.Teams[uuid.MustParse(tm[1])]
	if t == nil {
		writeError(w, r, &apiError{404, "0x80040217", fmt.Sprintf("team With Id = %s Does Not Exist", tm[1]), "ObjectDoesNotExist"})
		return true
	}
	if tm[2] == "teamroles_association" {
		if !e.canRead(w, r, u, "prvReadRole", roleEntity) {
			return true
		}
		rows := []map[string]any{}
		for _, id := range t.Roles {
			rows = append(rows, e.roleRow(e.teams.Roles[id]))
		}
		e.writeCollection(w, r, "roles", rows)
		return true
	}
	if !e.canRead(w, r, u, "prvReadTeam", teamEntity) {
		return true
	}
	held := map[string]bool{}
	for _, id := range t.Roles {
		for p := range e.teams.Roles[id].Privileges {
			held[p] = true
		}
	}
	names := make([]string, 0, len(held))
	for p := range held {
		names = append(names, p)
	}
	sort.Strings(names)
	privs := make([]map[string]any, 0, len(names))
	for _, p := range names {
		privs = append(privs, map[string]any{"Depth": "Global", "PrivilegeId": e.privilegeID(p).String(),
			"BusinessUnitId": e.businessUnit.String(), "PrivilegeName": p})
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.context": baseURL(r) + apiPath + "$metadata#Microsoft.Dynamics.CRM.RetrieveTeamPrivilegesResponse",
		"RolePrivileges": privs,
	})
	return true
}

// canRead answers 403 in Dataverse's form when the caller lacks a read privilege.
func (e *Emulator) canRead(w http.ResponseWriter, r *http.Request, u *user, privilege string, ent *Entity) bool {
	if e.holdsLocked(u, privilege) {
		return true
	}
	writeError(w, r, e.errPrivilege(u, privilege, ent))
	return false
}

// roleRow is a role as the Web API returns it: a predefined role has a role template.
func (e *Emulator) roleRow(role *SecurityRole) map[string]any {
	var template any
	if role.Predefined {
		template = uuid.NewSHA1(uuid.NameSpaceOID, []byte("role template "+role.Name)).String()
	}
	return map[string]any{"roleid": role.ID.String(), "name": role.Name, "_roletemplateid_value": template,
		"_businessunitid_value": e.businessUnit.String(), "ismanaged": role.Predefined}
}

// writeCollection writes rows as an entity collection, with the columns $select names (and the
// id) when it names any.
func (e *Emulator) writeCollection(w http.ResponseWriter, r *http.Request, set string, rows []map[string]any) {
	if sel := selectOf(r); sel != nil {
		keep := map[string]bool{"roleid": true, "teamid": true}
		for _, s := range sel {
			keep[strings.TrimSpace(s)] = true
		}
		for _, row := range rows {
			for k := range row {
				if !keep[k] {
					delete(row, k)
				}
			}
		}
	}
	if rows == nil {
		rows = []map[string]any{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"@odata.context": baseURL(r) + apiPath + "$metadata#" + set, "value": rows})
}

// teamRoutes serves the admin endpoints of teams:
//
//	POST /_emulator/teams                     {"name":"Sales integration","type":0,"members":["<user id>"],
//	                                          "roles":[{"name":"DVSync","predefined":false,"privileges":["*"]}]}:
//	                                          answers 201 {"teamId","roleIds":[…]}; 409 for a name a team has
//	POST /_emulator/roles/{id}/privileges     {"grant":["prv…"],"revoke":["prv…"]}: change a team role
func (e *Emulator) teamRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /_emulator/teams", func(w http.ResponseWriter, r *http.Request) {
		var spec TeamSpec
		if !decodeAdmin(w, r, &spec) {
			return
		}
		id, roles, err := e.AddTeam(spec)
		if err != nil {
			status := http.StatusBadRequest
			if errors.Is(err, ErrTeamExists) {
				status = http.StatusConflict
			}
			adminError(w, status, err)
			return
		}
		ids := make([]string, 0, len(roles))
		for _, r := range roles {
			ids = append(ids, r.String())
		}
		writeJSON(w, http.StatusCreated, map[string]any{"teamId": id.String(), "roleIds": ids})
	})
	mux.HandleFunc("POST /_emulator/roles/{id}/privileges", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Grant, Revoke []string }
		id, err := uuid.Parse(r.PathValue("id"))
		if err != nil {
			adminError(w, http.StatusBadRequest, err)
			return
		}
		if !decodeAdmin(w, r, &req) {
			return
		}
		for _, p := range req.Grant {
			err = errors.Join(err, e.SetRolePrivilege(id, p, true))
		}
		for _, p := range req.Revoke {
			err = errors.Join(err, e.SetRolePrivilege(id, p, false))
		}
		if err != nil {
			adminError(w, http.StatusBadRequest, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

// loaded is a state as gob decoded it, with the empty maps gob leaves out made again.
func (ts *teamState) loaded() *teamState {
	if ts.Roles == nil {
		ts.Roles = map[uuid.UUID]*SecurityRole{}
	}
	if ts.Teams == nil {
		ts.Teams = map[uuid.UUID]*EmulatedTeam{}
	}
	for _, r := range ts.Roles {
		if r.Privileges == nil {
			r.Privileges = map[string]bool{}
		}
	}
	for _, t := range ts.Teams {
		if t.Members == nil {
			t.Members = map[uuid.UUID]bool{}
		}
	}
	return ts
}
