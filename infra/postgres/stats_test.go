package postgres_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/telemetry"
)

// CountLedger counts open and replayed errors, not resolved ones, with the first sighting of the
// oldest, and the skipped records by table.
func TestCountLedger(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	// A kind and a table of this run only: the package's other tests share the database.
	run := uuid.NewString()[:8]
	kind, table := domain.Kind("stats_kind_"+run), "stats"+run
	oldest := time.Now().Add(-time.Hour).UTC().Truncate(time.Microsecond)
	for i, at := range []time.Time{oldest, time.Now().UTC()} {
		key := "K" + run + string(rune('a'+i))
		ev := errorEvent(key, "e", 1)
		ev.Kind, ev.OccurredAt = kind, at
		if err := s.RecordError(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	// A third error of the kind, resolved: not counted.
	resolved := errorEvent("K"+run+"r", "e", 1)
	resolved.Kind, resolved.OccurredAt = kind, oldest.Add(-time.Hour)
	if err := s.RecordError(ctx, resolved); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateCoupling(ctx, "customer", resolved.Key, func(_ context.Context, c domain.Coupling, _ domain.RecordLock) (domain.Coupling, error) {
		c.Version, c.Status, c.RowID, c.LastSyncedAt = 1, domain.CouplingSynced, uuid.New(), time.Now()
		return c, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.ResolveRecord(ctx, domain.RecordSynced{Table: "customer", Key: resolved.Key, Version: 1, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	for i, skipped := range []bool{true, true, false} {
		key := "S" + run + string(rune('a'+i))
		if err := s.UpdateCoupling(ctx, table, key, func(_ context.Context, c domain.Coupling, _ domain.RecordLock) (domain.Coupling, error) {
			c.Status, c.Skipped, c.Failures, c.LastErrorKind = domain.CouplingFailed, skipped, 2, kind
			return c, nil
		}); err != nil {
			t.Fatal(err)
		}
	}

	counts, err := s.CountLedger(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var mine []telemetry.OpenErrors
	for _, o := range counts.Open {
		if o.Kind == kind {
			mine = append(mine, o)
		}
	}
	if len(mine) != 1 || mine[0].Class != domain.ClassCoupling || mine[0].Count != 2 || !mine[0].Oldest.Equal(oldest) {
		t.Fatalf("open errors of %s = %+v; want 2 coupling errors, the oldest first seen %s", kind, mine, oldest)
	}
	if n := counts.Skipped[table]; n != 2 {
		t.Fatalf("skipped records of %s = %d, want 2 (all: %v)", table, n, counts.Skipped)
	}
}

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
