package postgres

import (
	"context"
	"database/sql"
	"io/fs"
	"testing"
	"time"

	"github.com/pressly/goose/v3"

	"github.com/dvsync/dvsync/infra/postgres/pgtest"
)

// Migration 00018 keeps table_pauses' catching_up and resume_backlog (expand/contract): the
// previous release's processes read them while an upgrade rolls, so pause and resume write them
// as it did, its queries still run, and the migration goes down and up again.
func TestMigration18KeepsWhatThePreviousReleaseReads(t *testing.T) {
	ctx := context.Background()
	url, drop, err := pgtest.Database("m18")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(drop)
	s, err := Open(ctx, url, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// The previous release's TableStates and CaughtUp, word for word.
	previous := func() (catchingUp bool, backlog int64) {
		t.Helper()
		rows, err := s.pool.Query(ctx, `SELECT table_name, paused, changed_at, changed_by, catching_up, resume_backlog
			FROM table_pauses ORDER BY table_name`)
		if err != nil {
			t.Fatalf("the previous release's table states: %v", err)
		}
		defer rows.Close()
		for rows.Next() {
			var table, by string
			var paused bool
			var at time.Time
			if err := rows.Scan(&table, &paused, &at, &by, &catchingUp, &backlog); err != nil {
				t.Fatal(err)
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("the previous release's table states: %v", err)
		}
		return catchingUp, backlog
	}
	if _, err := s.PauseTable(ctx, "currency", "ada"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ResumeTable(ctx, "currency", "ada", 7, 3); err != nil {
		t.Fatal(err)
	}
	if up, n := previous(); !up || n != 7 {
		t.Fatalf("after a resume with 7 waiting the previous release reads catching_up %v, resume_backlog %d", up, n)
	}
	if _, err := s.pool.Exec(ctx, `UPDATE table_pauses SET catching_up = false WHERE table_name = $1 AND catching_up AND NOT paused`, "currency"); err != nil {
		t.Fatalf("the previous release's CaughtUp: %v", err)
	}
	if _, err := s.PauseTable(ctx, "currency", "ada"); err != nil {
		t.Fatal(err)
	}
	if up, n := previous(); up || n != 0 {
		t.Fatalf("after a pause the previous release reads catching_up %v, resume_backlog %d", up, n)
	}

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
	if _, err := p.DownTo(ctx, 17); err != nil {
		t.Fatalf("migration 00018 down: %v", err)
	}
	if _, err := db.ExecContext(ctx, `SELECT catching_up, resume_backlog FROM table_pauses`); err != nil {
		t.Fatalf("after 00018 down the previous release's columns: %v", err)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("migration 00018 up again: %v", err)
	}
}
