package sqlite

import (
	"context"
	"database/sql"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/pressly/goose/v3"
)

// Migration 00017 repairs a database in which one row is coupled to several records, as
// infra/postgres's does: the record that synced the row last keeps it, the others are uncoupled
// with an open already_coupled error and an audit entry each, and the unique index then holds.
func TestMigration17KeepsTheRecordThatSyncedLast(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "dvsync.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	sub, _ := fs.Sub(migrations, "migrations")
	p, err := goose.NewProvider(goose.DialectSQLite3, db, sub)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 16); err != nil {
		t.Fatal(err)
	}
	row, other := uuid.NewString(), uuid.NewString()
	ago := func(d time.Duration) int64 { return time.Now().Add(-d).UnixNano() }
	_, err = db.ExecContext(ctx, `INSERT INTO couplings (table_name, source_key, row_id, entity, version, status, last_synced_at, row_name, updated_at) VALUES
		('customer', 'OLD', ?1, 'account', 3, 'synced', ?3, 'Adatum', ?6),
		('customer', 'NEW', ?1, 'account', 5, 'synced', ?4, 'Adatum', ?5),
		('customer', 'NEVER', ?1, 'account', -1, 'failed', NULL, '', ?6),
		('customer', 'GONE', ?1, 'account', 9, 'deleted', ?6, '', ?6),
		('customer', 'ALONE', ?2, 'account', 1, 'synced', ?5, '', ?6)`,
		row, other, ago(2*time.Hour), ago(time.Hour), ago(3*time.Hour), ago(0))
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err := Open(ctx, path)
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
	if c, _ := s.Coupling(ctx, "customer", "GONE"); c.Status != "deleted" || c.RowID.String() != row {
		t.Fatalf("a deleted record's coupling is not live and stays: %+v", c)
	}
	for _, key := range []string{"OLD", "NEVER"} {
		var kind, class, msg, status string
		if err := s.db.QueryRowContext(ctx, `SELECT kind, class, message, status FROM sync_errors WHERE table_name = 'customer' AND source_key = ?`, key).
			Scan(&kind, &class, &msg, &status); err != nil {
			t.Fatalf("the error of customer/%s: %v", key, err)
		}
		if kind != "already_coupled" || class != "coupling" || status != "open" ||
			!strings.Contains(msg, "Cannot couple customer/"+key+" to this account record, because the account record is already coupled to customer/NEW") {
			t.Fatalf("the error of customer/%s: %s %s %s %q", key, class, kind, status, msg)
		}
	}
	var audited int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM audit_log WHERE actor = 'migration 00017' AND action = 'uncouple'`).Scan(&audited); err != nil || audited != 2 {
		t.Fatalf("audit entries of the migration: %d, %v; want 2", audited, err)
	}
	if _, err := s.db.ExecContext(ctx, `UPDATE couplings SET row_id = ?, status = 'synced' WHERE source_key = 'OLD'`, row); !isRowTaken(err) {
		t.Fatalf("a second live coupling after the migration: %v, want the unique index's refusal", err)
	}
}
