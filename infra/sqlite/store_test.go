package sqlite_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dvsync/dvsync/infra/sqlite"
	"github.com/dvsync/dvsync/infra/storage"
	"github.com/dvsync/dvsync/infra/storage/storagetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestContract(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dvsync.db")
	storagetest.Run(t, storagetest.Harness{
		Open: func(t *testing.T, claimTTL time.Duration) storage.Store {
			s, err := sqlite.OpenWithClaimTTL(context.Background(), path, claimTTL)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(s.Close)
			return s
		},
		ExpireClaims: func(t *testing.T, key string) {
			db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.Exec(`UPDATE record_claims SET until = ? WHERE source_key = ?`, time.Now().Add(-time.Second).UnixNano(), key); err != nil {
				t.Fatal(err)
			}
		},
		RowClaims: func(t *testing.T, key string) int {
			db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			var n int
			if err := db.QueryRow(`SELECT count(*) FROM row_claims WHERE source_key = ?`, key).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		},
		AgeCouplingRuns: func(t *testing.T, table string, d time.Duration) {
			db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.Exec(`UPDATE coupling_runs SET started_at = started_at - ?1, heartbeat_at = heartbeat_at - ?1 WHERE table_name = ?2`,
				d.Nanoseconds(), table); err != nil {
				t.Fatal(err)
			}
		},
	})
}

// A store reopened on its file finds what it stored: `dvsync dev` keeps couplings and errors
// across restarts.
func TestStateSurvivesReopening(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dvsync.db")
	ctx := context.Background()
	s, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.EndSession(ctx, "session-1", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if ended, err := s.SessionEnded(ctx, "session-1"); err != nil || !ended {
		t.Fatalf("after reopening: ended = %v, %v; want true", ended, err)
	}
}

func TestURLs(t *testing.T) {
	for raw, want := range map[string]string{"sqlite:/var/lib/dvsync.db": "/var/lib/dvsync.db", "sqlite:///var/lib/dvsync.db": "/var/lib/dvsync.db",
		"sqlite:dvsync.db": "dvsync.db"} {
		if !sqlite.IsURL(raw) || sqlite.PathOf(raw) != want {
			t.Errorf("%s: IsURL %v, path %q; want %q", raw, sqlite.IsURL(raw), sqlite.PathOf(raw), want)
		}
	}
	if sqlite.IsURL("postgres://db/dvsync") {
		t.Error("a PostgreSQL URL taken for SQLite")
	}
}

// A path with URI characters opens that very file, which only its owner may read.
func TestOddPathsOpenThatFileOwnerOnly(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a#b?c%20d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "dvsync.db")
	s, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatalf("the store is not at %s: %v", path, err)
	}
	if mode := info.Mode().Perm(); mode != 0o600 {
		t.Fatalf("the store file's mode is %o, want 600", mode)
	}
	entries, _ := os.ReadDir(filepath.Dir(dir))
	if len(entries) != 1 {
		t.Fatalf("files beside the data directory: %v, want none", entries)
	}
}
