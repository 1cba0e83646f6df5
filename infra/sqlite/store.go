// Package sqlite is the embedded store of `dvsync dev`: the same couplings, errors ledger, claims
// and audit log as infra/postgres, in one SQLite file, through modernc.org/sqlite (pure Go, no
// cgo), so that dvsync runs on a machine with nothing installed. It passes the same suite
// (storage/storagetest). It is meant for one machine: several processes may share the file (its
// claims work across them), but not across a network file system.
package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/pressly/goose/v3"
	"modernc.org/sqlite" // and the "sqlite" database/sql driver

	"github.com/dvsync/dvsync/infra/microbatch"
	"github.com/dvsync/dvsync/infra/storage"
)

// fold is the text search's case folding: SQLite's own lower() folds ASCII only, and the search
// must find "MÜLLER" for "müller" as PostgreSQL's lower() does.
func init() {
	sqlite.MustRegisterDeterministicScalarFunction("dvsync_fold", 1, func(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
		switch v := args[0].(type) {
		case string:
			return strings.ToLower(v), nil
		case []byte:
			return strings.ToLower(string(v)), nil
		}
		return args[0], nil
	})
}

//go:embed migrations/*.sql
var migrations embed.FS

var _ storage.Store = (*Store)(nil)

// Store is dvsync's SQLite database.
type Store struct {
	db       *sql.DB
	claimTTL time.Duration
	now      func() time.Time

	mu     sync.Mutex
	held   map[*claim]struct{}
	closed bool
	quit   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
}

// URLScheme is how DATABASE_URL names an SQLite file: sqlite:<path>.
const URLScheme = "sqlite:"

// IsURL reports whether a DATABASE_URL names an SQLite file.
func IsURL(raw string) bool { return strings.HasPrefix(raw, URLScheme) }

// PathOf returns the file a sqlite: URL names (sqlite:/var/lib/dvsync/dvsync.db,
// sqlite:///var/lib/dvsync/dvsync.db and sqlite:dvsync.db are all accepted).
func PathOf(raw string) string {
	return strings.TrimPrefix(strings.TrimPrefix(raw, URLScheme), "//")
}

// Open opens (creating it if needed) the database file at path and applies pending migrations.
func Open(ctx context.Context, path string) (*Store, error) {
	return open(ctx, path, storage.ClaimTTL)
}

func open(ctx context.Context, path string, claimTTL time.Duration) (*Store, error) {
	if path == "" {
		return nil, errors.New("sqlite: no database file named")
	}
	// WAL lets readers go on while one writes; the busy timeout makes a second process wait for
	// the file's write lock instead of failing; immediate transactions take that lock at BEGIN,
	// so that two never both read and then fail to upgrade.
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "busy_timeout(10000)", "foreign_keys(1)", "synchronous(NORMAL)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	// The file holds error payloads, which may hold personal data: only its owner reads it (SQLite
	// gives its journal files the database file's mode).
	if f, err := os.OpenFile(abs, os.O_RDONLY|os.O_CREATE, 0o600); err == nil {
		f.Close()
	}
	// A file: URI, the path escaped: a '#', '?' or '%' in it would otherwise cut it short.
	dsn := (&url.URL{Scheme: "file", Path: abs, RawQuery: q.Encode()}).String()
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	// One connection: SQLite writes one at a time anyway, and a single connection never meets
	// its own process's lock. Lanes wait for it in turn; no transaction spans a Dataverse call.
	db.SetMaxOpenConns(1)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	if err := migrate(ctx, db); err != nil {
		db.Close()
		return nil, err
	}
	s := &Store{db: db, claimTTL: cmp.Or(claimTTL, storage.ClaimTTL), now: time.Now, held: map[*claim]struct{}{}, quit: make(chan struct{})}
	s.wg.Add(1)
	go s.renew()
	return s, nil
}

func migrate(ctx context.Context, db *sql.DB) error {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, db, sub)
	if err != nil {
		return fmt.Errorf("sqlite: migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	return nil
}

// Ping checks the database answers, for health checks.
func (s *Store) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

// Close stops renewing claims and closes the database.
func (s *Store) Close() {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.quit)
		s.wg.Wait()
		s.db.Close()
	})
}

func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// inTx runs f in one (immediate) transaction and commits it unless f fails.
func (s *Store) inTx(ctx context.Context, f func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: begin: %w", err)
	}
	if err := f(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: commit: %w", err)
	}
	return nil
}

// Times are stored as Unix nanoseconds, UTC; NULL for the zero time. A time outside the years
// 1678 to 2262, which nanoseconds cannot hold, is stored as the nearest they can, one inside the
// bounds, so that a filter beyond them (boundNanos) still takes it.
func nanos(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return unixNano(t)
}

func unixNano(t time.Time) int64 { return clampNanos(t, math.MinInt64+1, math.MaxInt64-1) }

// boundNanos is a filter's time (since, until, a cursor), which may reach the bounds themselves.
func boundNanos(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return clampNanos(t, math.MinInt64, math.MaxInt64)
}

func clampNanos(t time.Time, lo, hi int64) int64 {
	switch {
	case t.Before(time.Unix(0, lo)):
		return lo
	case t.After(time.Unix(0, hi)):
		return hi
	}
	return t.UnixNano()
}

func fromNanos(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(0, n.Int64).UTC()
}

func optionalTime(n sql.NullInt64) *time.Time {
	if !n.Valid {
		return nil
	}
	t := fromNanos(n)
	return &t
}

func optionalString(n sql.NullString) *string {
	if !n.Valid {
		return nil
	}
	return &n.String
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// EndSession records that the page session id was signed out; expired rows are pruned here.
func (s *Store) EndSession(ctx context.Context, id string, expires time.Time) error {
	if _, err := s.db.ExecContext(ctx, `INSERT INTO page_sessions_ended (id, expires_at) VALUES (?, ?)
		ON CONFLICT (id) DO NOTHING`, id, unixNano(expires)); err != nil {
		return fmt.Errorf("sqlite: end session: %w", err)
	}
	if _, err := s.db.ExecContext(ctx, `DELETE FROM page_sessions_ended WHERE expires_at < ?`, s.now().UnixNano()); err != nil {
		return fmt.Errorf("sqlite: prune ended sessions: %w", err)
	}
	return nil
}

// SessionEnded tells whether the page session id was signed out.
func (s *Store) SessionEnded(ctx context.Context, id string) (bool, error) {
	var ended bool
	if err := s.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM page_sessions_ended WHERE id = ?)`, id).Scan(&ended); err != nil {
		return false, fmt.Errorf("sqlite: read ended sessions: %w", err)
	}
	return ended, nil
}

// closedErr is what coupling calls answer after Close, as the PostgreSQL store's do.
var closedErr = microbatch.ErrClosed
