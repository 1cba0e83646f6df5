// Package postgres keeps couplings and the errors ledger in PostgreSQL through pgx. Its schema
// migrations are embedded and applied at start.
package postgres

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store is dvsync's PostgreSQL database.
type Store struct {
	pool *pgxpool.Pool

	ioOnce    sync.Once
	io        *couplingIO   // started by the first coupling call
	claimTTL  time.Duration // 0: storage.ClaimTTL (tests shorten it)
	closeOnce sync.Once
}

// Open connects to the database at url and applies pending migrations. Several processes may
// start at once: a session lock lets one migrate while the others wait. maxConns sizes the pool
// (0 keeps pgx's default, or pool_max_conns from the URL); a worker needs one connection per lane
// besides those it reads with.
func Open(ctx context.Context, url string, maxConns int) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's parse error can quote the URL with its password; say only what is wrong.
		return nil, fmt.Errorf("postgres: DATABASE_URL is not a valid connection string")
	}
	if maxConns > 0 && !strings.Contains(url, "pool_max_conns") {
		cfg.MaxConns = int32(maxConns)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	if err := migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, err
	}
	return &Store{pool: pool}, nil
}

func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return err
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, sub, goose.WithSessionLocker(locker))
	if err != nil {
		return fmt.Errorf("postgres: migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	return nil
}

// Ping checks the connection, for health checks.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// Close stops the coupling batches (what is pending is sent first) and closes the pool.
func (s *Store) Close() {
	s.closeOnce.Do(func() {
		s.ioOnce.Do(func() {}) // no batches start after Close: coupling calls answer ErrClosed
		if s.io != nil {
			s.io.close()
		}
		s.pool.Close()
	})
}
