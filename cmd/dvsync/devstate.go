package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/dvsync/dvsync/infra/httpapi"
	"github.com/dvsync/dvsync/infra/natsjs"
)

// devState is what `dvsync dev` keeps in its data directory so that a restart finds everything
// as it was: the streams, the store, the emulator's rows, and the secrets people pasted (the
// operator token, the publisher's password) stay the same.
type devState struct {
	dir   string
	Token string           `json:"token"`
	NATS  natsjs.Passwords `json:"nats"`
	New   bool             `json:"-"` // the directory held no state: the demo is published
}

// The files of a dev data directory; --fresh removes these and nothing else, so that a data
// directory pointed at a folder holding other files loses none of them.
const (
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

// openDevState reads the state of dir, creating it (and the directory) when there is none or
// when fresh asks to start over.
func openDevState(dir string, fresh bool) (*devState, error) {
	if fresh {
		for _, name := range []string{devStateFile, devNATSDir, devStoreFile, devStoreFile + "-wal", devStoreFile + "-shm", devEmulatorFile} {
			if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
				return nil, fmt.Errorf("--fresh: %w", err)
			}
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("--data-dir: %w", err)
	}
	st := &devState{dir: dir}
	path := filepath.Join(dir, devStateFile)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		st.Token, st.NATS, st.New = httpapi.NewToken(), natsjs.NewPasswords(), true
		b, _ := json.Marshal(st)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return nil, fmt.Errorf("--data-dir: %w", err)
		}
		return st, nil
	case err != nil:
		return nil, fmt.Errorf("--data-dir: %w", err)
	}
	if err := json.Unmarshal(b, st); err != nil || st.Token == "" || st.NATS.Dvsync == "" || st.NATS.Publisher == "" {
		return nil, fmt.Errorf("--data-dir: %s is not dvsync dev's state (--fresh starts over)", path)
	}
	return st, nil
}
