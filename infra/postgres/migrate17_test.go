package postgres

import (
	"context"
	"database/sql"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/pressly/goose/v3"

	"github.com/dvsync/dvsync/infra/postgres/pgtest"
)

// Migration 00017 repairs a database in which one row is coupled to several records (possible
// before it): the record that synced the row last keeps it, the others are uncoupled with an
// open already_coupled error and an audit entry each, and the unique index then holds.
func TestMigration17KeepsTheRecordThatSyncedLast(t *testing.T) {
	ctx := context.Background()
	url, drop, err := pgtest.Database("m17")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(drop)
	db, err := sql.Open("pgx", url) // the driver of pgx's stdlib, which the store uses
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	sub, _ := fs.Sub(migrations, "migrations")
	p, err := goose.NewProvider(goose.DialectPostgres, db, sub)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 16); err != nil {
		t.Fatal(err)
	}
	row, other := uuid.New(), uuid.New()
	_, err = db.ExecContext(ctx, `INSERT INTO couplings (table_name, source_key, row_id, entity, version, status, last_synced_at, row_name, updated_at) VALUES
		('customer', 'OLD', $1, 'account', 3, 'synced', now() - interval '2 hours', 'Adatum', now()),
		('customer', 'NEW', $1, 'account', 5, 'synced', now() - interval '1 hour', 'Adatum', now() - interval '3 hours'),
		('customer', 'NEVER', $1, 'account', -1, 'failed', NULL, '', now()),
		('customer', 'GONE', $1, 'account', 9, 'deleted', now(), '', now()),
		('customer', 'ALONE', $2, 'account', 1, 'synced', now() - interval '5 hours', '', now())`, row, other)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(ctx, url, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	for key, want := range map[string]bool{"NEW": true, "OLD": false, "NEVER": false, "ALONE": true} {
		c, err := s.Coupling(ctx, "customer", key)
		if err != nil || c.Coupled() != want {
			t.Fatalf("customer/%s after the migration: %+v, %v; coupled %v", key, c, err, want)
		}
		if !want && (c.LastErrorKind != "already_coupled" || c.RowName != "") {
			t.Fatalf("customer/%s: %+v; want uncoupled with already_coupled", key, c)
		}
	}
	if c, _ := s.Coupling(ctx, "customer", "GONE"); c.Status != "deleted" || c.RowID != row {
		t.Fatalf("a deleted record's coupling is not live and stays: %+v", c)
	}
	for _, key := range []string{"OLD", "NEVER"} {
		var kind, class, msg, status string
		if err := s.pool.QueryRow(ctx, `SELECT kind, class, message, status FROM sync_errors WHERE table_name = 'customer' AND source_key = $1`, key).
			Scan(&kind, &class, &msg, &status); err != nil {
			t.Fatalf("the error of customer/%s: %v", key, err)
		}
		if kind != "already_coupled" || class != "coupling" || status != "open" ||
			!strings.Contains(msg, "Cannot couple customer/"+key+" to this account record, because the account record is already coupled to customer/NEW") {
			t.Fatalf("the error of customer/%s: %s %s %s %q", key, class, kind, status, msg)
		}
	}
	var audited int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE actor = 'migration 00017' AND action = 'uncouple'`).Scan(&audited); err != nil || audited != 2 {
		t.Fatalf("audit entries of the migration: %d, %v; want 2", audited, err)
	}
	if _, err := s.pool.Exec(ctx, `UPDATE couplings SET row_id = $1, status = 'synced' WHERE source_key = 'OLD'`, row); !isRowTaken(err) {
		t.Fatalf("a second live coupling after the migration: %v, want the unique index's refusal", err)
	}
}

// Migration 00017 during a rolling upgrade: a worker of the previous version is committing a
// second coupling of a row when the migration starts. The migration waits for it and repairs what
// it committed, so that the unique index builds; without the lock the repair would miss it and
// the index build fail, and the process would not start.
func TestMigration17WaitsForACommitOfAnOldWorker(t *testing.T) {
	ctx := context.Background()
	url, drop, err := pgtest.Database("m17_lock")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(drop)
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	sub, _ := fs.Sub(migrations, "migrations")
	p, err := goose.NewProvider(goose.DialectPostgres, db, sub)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 16); err != nil {
		t.Fatal(err)
	}
	row := uuid.New()
	if _, err := db.ExecContext(ctx, `INSERT INTO couplings (table_name, source_key, row_id, entity, version, status, last_synced_at, updated_at)
		VALUES ('customer', 'FIRST', $1, 'account', 1, 'synced', now() - interval '1 hour', now())`, row); err != nil {
		t.Fatal(err)
	}
	old, err := db.BeginTx(ctx, nil) // the old worker's commit, under way
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = old.Rollback() }()
	if _, err := old.ExecContext(ctx, `INSERT INTO couplings (table_name, source_key, row_id, entity, version, status, last_synced_at, updated_at)
		VALUES ('customer', 'SECOND', $1, 'account', 1, 'synced', now(), now())`, row); err != nil {
		t.Fatal(err)
	}
	migrated := make(chan error, 1)
	go func() { _, err := p.UpTo(ctx, 17); migrated <- err }()
	deadline := time.Now().Add(10 * time.Second)
	for waiting := 0; waiting == 0; {
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-migrated:
			t.Fatalf("the migration finished while a commit was under way: %v", err)
		case <-time.After(5 * time.Millisecond): // polled with a deadline, not slept on
		}
		if time.Now().After(deadline) {
			t.Fatal("the migration does not wait on a lock")
		}
	}
	if err := old.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-migrated; err != nil {
		t.Fatalf("the migration after the old worker's commit: %v", err)
	}
	var second sql.NullString
	if err := db.QueryRowContext(ctx, `SELECT row_id::text FROM couplings WHERE source_key = 'FIRST'`).Scan(&second); err != nil || second.Valid {
		t.Fatalf("customer/FIRST keeps row %v (%v); want it uncoupled, customer/SECOND synced the row last", second, err)
	}
	var kept string
	if err := db.QueryRowContext(ctx, `SELECT row_id::text FROM couplings WHERE source_key = 'SECOND'`).Scan(&kept); err != nil || kept != row.String() {
		t.Fatalf("customer/SECOND's row %q (%v), want %s", kept, err, row)
	}
}
