package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/gofrs/flock"

	"github.com/dvsync/dvsync/infra/httpapi"
	"github.com/dvsync/dvsync/infra/natsjs"
)

// devState is what `dvsync dev` keeps in its data directory so that a restart finds everything
// as it was: the streams, the store, the emulator's rows, and the secrets people pasted (the
// operator token, the publisher's password) stay the same.
type devState struct {
	dir  string
	lock *flock.Flock
	// Token and NATS are the secrets people paste: the same at every start.
	Token string           `json:"token"`
	NATS  natsjs.Passwords `json:"nats"`
	// Seeded is set once the demo was published in full: until then each start publishes it.
	Seeded bool `json:"seeded"`
}

// The files of a dev data directory; --fresh removes these and nothing else, so that a data
// directory pointed at a folder holding other files loses none of them.
const (
	devLockFile     = "dev.lock" // held while a dev runs on the directory: two would share one store
	devStateFile    = "dev.json"
	devNATSDir      = "jetstream"
	devStoreFile    = "dvsync.db"
	devEmulatorFile = "emulator.state"
)

func (s *devState) natsDir() string      { return filepath.Join(s.dir, devNATSDir) }
func (s *devState) storeFile() string    { return filepath.Join(s.dir, devStoreFile) }
func (s *devState) emulatorFile() string { return filepath.Join(s.dir, devEmulatorFile) }

// defaultDevDataDir is the per-user place for dev state: $XDG_DATA_HOME/dvsync/dev, else
// ~/.local/share/dvsync/dev on Linux and the BSDs, the user's application data folder elsewhere.
func defaultDevDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "dvsync", "dev")
	}
	switch runtime.GOOS {
	case "darwin", "windows", "ios", "plan9":
		if d, err := os.UserConfigDir(); err == nil {
			return filepath.Join(d, "dvsync", "dev")
		}
	default:
		if h, err := os.UserHomeDir(); err == nil {
			return filepath.Join(h, ".local", "share", "dvsync", "dev")
		}
	}
	return ""
}

// openDevState locks dir for this process and reads its state, creating it (and the directory)
// when there is none or when fresh asks to start over. close unlocks it.
func openDevState(dir string, fresh bool) (*devState, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("--data-dir: %w", err)
	}
	lock := flock.New(filepath.Join(dir, devLockFile))
	if ok, err := lock.TryLock(); err != nil || !ok {
		return nil, fmt.Errorf("--data-dir: another dvsync dev is using %s (stop it, or give this one another --data-dir)", dir)
	}
	st, err := readDevState(dir, fresh)
	if err != nil {
		_ = lock.Unlock()
		return nil, err
	}
	st.lock = lock
	return st, nil
}

func (s *devState) close() { _ = s.lock.Unlock() }

func readDevState(dir string, fresh bool) (*devState, error) {
	if fresh {
		for _, name := range []string{devStateFile, devNATSDir, devStoreFile, devStoreFile + "-wal", devStoreFile + "-shm", devEmulatorFile} {
			if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
				return nil, fmt.Errorf("--fresh: %w", err)
			}
		}
	}
	st := &devState{dir: dir}
	path := filepath.Join(dir, devStateFile)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		st.Token, st.NATS = httpapi.NewToken(), natsjs.NewPasswords()
		return st, st.save()
	case err != nil:
		return nil, fmt.Errorf("--data-dir: %w", err)
	}
	if err := json.Unmarshal(b, st); err != nil || st.Token == "" || st.NATS.Dvsync == "" || st.NATS.Publisher == "" {
		return nil, fmt.Errorf("--data-dir: %s is not dvsync dev's state (--fresh starts over)", path)
	}
	return st, nil
}

// save writes the state whole or not at all (a new file renamed over the old), readable by its
// owner only: it holds the token and the passwords.
func (s *devState) save() error {
	b, _ := json.Marshal(s)
	tmp, err := os.CreateTemp(s.dir, ".dev-*.json") // created 0600
	if err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("--data-dir: %w", err)
	}
	if err := errors.Join(tmp.Sync(), tmp.Close(), os.Rename(tmp.Name(), filepath.Join(s.dir, devStateFile))); err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	return nil
}
