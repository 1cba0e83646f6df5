package emulator

import (
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/google/uuid"
)

// What `dvsync dev` keeps of an emulated environment between runs, so that the couplings it
// keeps still name rows that exist: every table's rows, and what was done to the application
// users (a revoked privilege stays revoked). gob, not JSON: a row's values keep their Go types
// (int64 option values and version numbers, UUID lookups), which JSON would turn into floats and
// strings.
type snapshot struct {
	Rows  map[string]map[uuid.UUID]row
	Users map[uuid.UUID]userState
	Teams *teamState
	// BaseCurrencyID is zero in a snapshot of a version that had one fixed id for every environment.
	BaseCurrencyID uuid.UUID
}

type userState struct {
	Privileges map[string]bool
	Disabled   bool
	NoRole     bool
	Restricted bool
}

func init() { gob.Register(uuid.UUID{}) }

// Save writes the emulator's rows and users' privileges to w.
func (e *Emulator) Save(w io.Writer) error {
	e.mu.Lock()
	snap := snapshot{Rows: e.rows, Users: map[uuid.UUID]userState{}, Teams: e.teams, BaseCurrencyID: e.baseCurrencyID}
	for id, u := range e.users {
		snap.Users[id] = userState{Privileges: u.privileges, Disabled: u.disabled, NoRole: u.noRole, Restricted: u.restricted}
	}
	err := gob.NewEncoder(w).Encode(snap)
	e.mu.Unlock()
	if err != nil {
		return fmt.Errorf("emulator: save: %w", err)
	}
	return nil
}

// Load replaces the rows of the tables the emulator knows with those Save wrote, and restores the
// privileges of the users it has. Rows of tables it no longer defines are left out.
func (e *Emulator) Load(r io.Reader) error {
	var snap snapshot
	if err := gob.NewDecoder(r).Decode(&snap); err != nil {
		return fmt.Errorf("emulator: load: %w", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	saved := snap.BaseCurrencyID
	if saved == uuid.Nil {
		saved = uuid.NewSHA1(uuid.NameSpaceOID, []byte("base currency")) // the one id of older versions
	}
	if _, ok := snap.Rows["transactioncurrency"][saved]; ok && saved != e.baseCurrencyID {
		// The saved environment's base currency replaces the one this emulator started with.
		e.replace("transactioncurrency", e.baseCurrencyID, nil)
		e.baseCurrencyID = saved
	}
	var newest int64
	for entity, rows := range snap.Rows {
		if e.rows[entity] == nil {
			continue
		}
		for id, r := range rows {
			e.replace(entity, id, r)
			if v, ok := r["versionnumber"].(int64); ok && v > newest {
				newest = v
			}
		}
	}
	for id, st := range snap.Users {
		if u := e.users[id]; u != nil {
			if st.Privileges == nil { // gob leaves an empty map out
				st.Privileges = map[string]bool{}
			}
			u.privileges, u.disabled, u.noRole, u.restricted = st.Privileges, st.Disabled, st.NoRole, st.Restricted
		}
	}
	if snap.Teams != nil {
		e.teams = snap.Teams.loaded()
	}
	versionCounter.Lock()
	versionCounter.n = max(versionCounter.n, newest)
	versionCounter.Unlock()
	return nil
}

// Changes counts the changes made to rows and users so far: a saver saves when it has moved.
func (e *Emulator) Changes() int64 { return e.writes.Load() }

// SaveFile writes Save's snapshot to path, whole or not at all (a new file renamed over the old).
func (e *Emulator) SaveFile(path string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".emulator-*")
	if err != nil {
		return fmt.Errorf("emulator: save: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := errors.Join(e.Save(tmp), tmp.Sync(), tmp.Close()); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("emulator: save: %w", err)
	}
	return nil
}

// LoadFile loads what SaveFile wrote to path; a file that does not exist is a fresh environment.
func (e *Emulator) LoadFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("emulator: load: %w", err)
	}
	defer f.Close()
	return e.Load(f)
}
