// Package emulator is a stand-in for the Dataverse Web API that answers with Dataverse's status
// codes, error codes and message forms: OData v4 routes under /api/data/v9.2/, an Entra ID style
// token endpoint, application users with privileges per entity, an admin API under
// /_emulator/ for tests and demos, and a read-only page of a row at /main.aspx?etn=…&id=…, where
// links to Dataverse rows lead. It keeps everything in memory.
package emulator

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// Verbs a security role grants per entity, as in prv<Verb><Entity>.
var Verbs = []string{"Create", "Read", "Write", "Delete", "Append", "AppendTo", "Assign"}

// App is an Entra ID app registration with its Dataverse application user.
type App struct {
	ClientID     string
	ClientSecret string
	UserID       uuid.UUID
}

type user struct {
	id         uuid.UUID
	aadObject  uuid.UUID
	privileges map[string]bool // of the user's security role
	disabled   bool
	noRole     bool // the security role was taken away
	restricted bool // an administrator restricted its app from the Dataverse API
	clientID   string
}

type token struct {
	user    uuid.UUID
	expires time.Time
}

type row map[string]any

// Emulator is one emulated Dataverse environment.
type Emulator struct {
	mu           sync.Mutex
	entities     map[string]*Entity // by logical name
	sets         map[string]*Entity // by entity set name
	rows         map[string]map[uuid.UUID]row
	keys         map[string]*entityKeys // by logical name
	undo         []undoEntry            // of the open transactions
	txDepth      int
	apps         map[string]App
	users        map[uuid.UUID]*user
	tokens       map[string]token
	tokenTTL     time.Duration
	businessUnit uuid.UUID
	// baseCurrencyID is the base currency row's id: a new one per emulated environment, as each
	// provisioned Dataverse environment has its own (a store shared by several emulators, tests
	// run again on one database, must not find it coupled already); Save and Load keep it.
	baseCurrencyID uuid.UUID
	privilegeIDs   map[string]uuid.UUID
	now            func() time.Time
	prot           *protection
	base           Currency     // the base currency Reset provisions
	teams          *teamState   // teams and their roles (teams.go)
	inFlight       atomic.Int64 // Web API requests being served, slow faults included
	writes         atomic.Int64 // changes to rows and users, for Changes
	// Tenant is the Entra ID tenant the token endpoint serves.
	Tenant string
}

// DefaultApp is the app registration `dvsync dev` and the tests use. Its secret guards nothing
// but the emulator.
var DefaultApp = App{ClientID: "8a1b7d60-51d4-4f39-9a2e-2c4b1f0e9d11", ClientSecret: "emulator-secret",
	UserID: uuid.MustParse("3f2a9c1e-7b5d-4e8f-a1c2-9d0e6b4a7f35")}

// DefaultTenant is the tenant id of the emulated Entra ID.
const DefaultTenant = "00000000-0000-0000-0000-0000000000aa"

// New returns an emulator with the default entities, the default base currency (USD) and
// DefaultApp, whose user holds every privilege on every entity.
func New() *Emulator {
	e := &Emulator{now: time.Now, Tenant: DefaultTenant, tokenTTL: time.Hour, prot: newProtection(), base: DefaultBaseCurrency,
		baseCurrencyID: uuid.Must(uuid.NewV7())}
	e.Reset()
	return e
}

// Reset drops all rows, tokens and users and loads the defaults again, the base currency included.
func (e *Emulator) Reset() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.entities, e.sets, e.rows = map[string]*Entity{}, map[string]*Entity{}, map[string]map[uuid.UUID]row{}
	e.keys, e.undo, e.txDepth = map[string]*entityKeys{}, nil, 0
	e.apps, e.users, e.tokens = map[string]App{}, map[uuid.UUID]*user{}, map[string]token{}
	e.privilegeIDs = map[string]uuid.UUID{}
	e.businessUnit = uuid.NewSHA1(uuid.NameSpaceOID, []byte("business unit"))
	e.teams = newTeamState(e.businessUnit)
	for _, ent := range DefaultEntities() {
		e.addEntityLocked(ent)
	}
	e.addAppLocked(DefaultApp)
	e.insertBaseCurrencyLocked()
	e.prot.reset()
}

func (e *Emulator) addEntityLocked(ent *Entity) {
	e.entities[ent.LogicalName], e.sets[ent.EntitySet] = ent, ent
	if e.rows[ent.LogicalName] == nil {
		e.rows[ent.LogicalName] = map[uuid.UUID]row{}
	}
	// The keys and rules may differ from those of the entity it replaces, over the same rows.
	e.keys[ent.LogicalName] = newEntityKeys(ent, e.rows[ent.LogicalName])
}

// AddApp registers an app and creates its application user with every privilege.
func (e *Emulator) AddApp(a App) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.addAppLocked(a)
}

// ErrAppRegistered is RegisterApp's answer for a client id registered already with another secret.
var ErrAppRegistered = errors.New("the client id is registered already")

// RegisterApp adds an app registration with a client secret and an application user with every
// privilege, whose id derives from the client id. It reports whether the app is new; an app
// registered already with the same secret is returned as it is, with another secret it fails.
func (e *Emulator) RegisterApp(clientID, clientSecret string) (App, bool, error) {
	if clientID == "" || clientSecret == "" {
		return App{}, false, errors.New("emulator: an app needs a clientId and a clientSecret")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if a, ok := e.apps[clientID]; ok {
		if a.ClientSecret != clientSecret {
			return App{}, false, fmt.Errorf("emulator: app %s with another secret: %w", clientID, ErrAppRegistered)
		}
		return a, false, nil
	}
	a := App{ClientID: clientID, ClientSecret: clientSecret,
		UserID: uuid.NewSHA1(uuid.NameSpaceOID, []byte("application user "+clientID))}
	e.addAppLocked(a)
	return a, true, nil
}

func (e *Emulator) addAppLocked(a App) {
	e.apps[a.ClientID] = a
	u := &user{id: a.UserID, aadObject: uuid.NewSHA1(uuid.NameSpaceOID, []byte(a.ClientID)), privileges: map[string]bool{}, clientID: a.ClientID}
	for _, ent := range e.entities {
		for _, v := range Verbs {
			u.privileges[privilegeName(v, ent)] = true
		}
	}
	grantTeamReadsLocked(u)
	e.users[a.UserID] = u
}

func privilegeName(verb string, ent *Entity) string { return "prv" + verb + ent.SchemaName }

// privilegeID is a stable id per privilege name, as Dataverse shows in its message.
func (e *Emulator) privilegeID(name string) uuid.UUID {
	if id, ok := e.privilegeIDs[name]; ok {
		return id
	}
	id := uuid.NewSHA1(uuid.NameSpaceOID, []byte(name))
	e.privilegeIDs[name] = id
	return id
}

// SetPrivilege grants or revokes a privilege (e.g. prvCreateProduct) of an app's user.
func (e *Emulator) SetPrivilege(userID uuid.UUID, privilege string, granted bool) error {
	if !strings.HasPrefix(privilege, "prv") {
		return fmt.Errorf("emulator: %q is not a privilege name (prv<Verb><Entity>)", privilege)
	}
	return e.changeUser(userID, func(u *user) {
		if granted {
			u.privileges[privilege] = true
		} else {
			delete(u.privileges, privilege)
		}
	})
}

// changeUser applies change to a user under the emulator's lock.
func (e *Emulator) changeUser(userID uuid.UUID, change func(*user)) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	u, ok := e.users[userID]
	if !ok {
		return fmt.Errorf("emulator: no user %s", userID)
	}
	change(u)
	e.writes.Add(1)
	return nil
}

// DisableUser disables or enables an application user.
func (e *Emulator) DisableUser(userID uuid.UUID, disabled bool) error {
	return e.changeUser(userID, func(u *user) { u.disabled = disabled })
}

// Rows returns a copy of every row of an entity set, as the Web API renders them, sorted by creation.
func (e *Emulator) Rows(entitySet string) ([]map[string]any, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ent, ok := e.sets[entitySet]
	if !ok {
		return nil, fmt.Errorf("emulator: no entity set %q", entitySet)
	}
	out := make([]map[string]any, 0, len(e.rows[ent.LogicalName]))
	for _, r := range e.rows[ent.LogicalName] {
		out = append(out, render(ent, r, nil))
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i]["versionnumber"].(int64) < out[j]["versionnumber"].(int64)
	})
	return out, nil
}

// DeleteRow deletes a row as a Dataverse user would, behind dvsync's back.
func (e *Emulator) DeleteRow(entitySet string, id uuid.UUID) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	ent, ok := e.sets[entitySet]
	if !ok {
		return fmt.Errorf("emulator: no entity set %q", entitySet)
	}
	if _, ok := e.rows[ent.LogicalName][id]; !ok {
		return fmt.Errorf("emulator: no %s row %s", ent.LogicalName, id)
	}
	e.put(ent.LogicalName, id, nil)
	return nil
}

func newToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return "emu." + hex.EncodeToString(b)
}

// versionCounter orders writes across the whole environment, as Dataverse's rowversion does.
var versionCounter struct {
	sync.Mutex
	n int64
}

func nextVersion() int64 {
	versionCounter.Lock()
	defer versionCounter.Unlock()
	versionCounter.n++
	return versionCounter.n
}

// Row returns one row as the Web API renders it, or nil when it does not exist.
func (e *Emulator) Row(entitySet string, id uuid.UUID) map[string]any {
	e.mu.Lock()
	defer e.mu.Unlock()
	ent, ok := e.sets[entitySet]
	if !ok {
		return nil
	}
	r, ok := e.rows[ent.LogicalName][id]
	if !ok {
		return nil
	}
	return render(ent, r, nil)
}

// RevokeTokens invalidates every token issued so far, as when Entra ID revokes a session; the
// next request with one answers 401.
func (e *Emulator) RevokeTokens() {
	e.mu.Lock()
	e.tokens = map[string]token{}
	e.mu.Unlock()
}

// SetTokenLifetime sets the lifetime of tokens issued from now on (an hour by default).
func (e *Emulator) SetTokenLifetime(d time.Duration) {
	e.mu.Lock()
	e.tokenTTL = d
	e.mu.Unlock()
}

// LoadDefinitions adds the entities of a definition file, replacing those with the same logical
// name. Existing rows of replaced entities are kept.
func (e *Emulator) LoadDefinitions(data []byte) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	ents, err := ParseDefinitions(data, e.entities)
	if err != nil {
		return err
	}
	for _, ent := range ents {
		if old, ok := e.entities[ent.LogicalName]; ok {
			delete(e.sets, old.EntitySet)
		}
		e.addEntityLocked(ent)
		for _, u := range e.users { // application users hold every privilege on new tables too
			for _, v := range Verbs {
				u.privileges[privilegeName(v, ent)] = true
			}
		}
	}
	return nil
}

// SetRoleAssigned assigns or unassigns the application user's security role. Without a role every
// request answers 403 0x80042f09.
func (e *Emulator) SetRoleAssigned(userID uuid.UUID, assigned bool) error {
	return e.changeUser(userID, func(u *user) { u.noRole = !assigned })
}

// ChangeRow changes a row as a Dataverse user would, behind dvsync's back: the values are set,
// modifiedon and the row version (its ETag) move on. No privilege or validation applies.
func (e *Emulator) ChangeRow(entitySet string, id uuid.UUID, values map[string]any) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	ent, ok := e.sets[entitySet]
	if !ok {
		return fmt.Errorf("emulator: no entity set %q", entitySet)
	}
	r, ok := e.rows[ent.LogicalName][id]
	if !ok {
		return fmt.Errorf("emulator: no %s row %s", ent.LogicalName, id)
	}
	e.update(ent, id, r, write{attrs: values})
	return nil
}

// InFlight is the number of Web API requests the emulator is serving now, including those a
// slow fault holds: a test waits for it to reach zero to know every late write has landed.
func (e *Emulator) InFlight() int64 { return e.inFlight.Load() }
