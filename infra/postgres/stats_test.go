package postgres_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// The counts can read their partial indexes instead of the tables, which only grow. The queries
// are CountLedger's.
func TestCountLedgerQueriesCanUseTheirIndexes(t *testing.T) {
	open(t) // the migrations have run
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `SET enable_seqscan = off`); err != nil {
		t.Fatal(err)
	}
	for query, index := range map[string]string{
		`SELECT class, kind, count(*), min(first_seen) FROM sync_errors
		WHERE status IN ('open', 'replayed') GROUP BY class, kind`: "sync_errors_open_class_kind",
		`SELECT table_name, count(*) FROM couplings WHERE skipped GROUP BY table_name`: "couplings_skipped",
	} {
		var plan []byte
		if err := conn.QueryRow(ctx, `EXPLAIN (FORMAT JSON) `+query).Scan(&plan); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(plan), `"Index Name": "`+index+`"`) {
			t.Errorf("the plan of %q does not read %s: %s", query, index, plan)
		}
	}
}
