package postgres_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/postgres"
	"github.com/dvsync/dvsync/infra/postgres/pgtest"
	"github.com/dvsync/dvsync/infra/storage"
	"github.com/dvsync/dvsync/infra/storage/storagetest"
)

var dbURL string

func TestMain(m *testing.M) { pgtest.Main(m, "store", &dbURL) }

func open(t *testing.T) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(context.Background(), dbURL, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func TestMigrationsRunConcurrentlyAndTwice(t *testing.T) {
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := postgres.Open(context.Background(), dbURL, 0)
			if err == nil {
				s.Close()
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// A value the database cannot hold is the record's fault, not a passing failure: callers must be
// able to tell, so that they report it instead of retrying it for ever.
func TestDataTheDatabaseCannotHoldIsRejectedNotTransient(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	_, err := s.Coupling(ctx, "customer", "C\x00NUL")
	if !errors.Is(err, domain.ErrStoreRejected) {
		t.Fatalf("reading a key with NUL: %v, want ErrStoreRejected", err)
	}
	err = s.UpdateCoupling(ctx, "customer", "ok", func(_ context.Context, cur domain.Coupling, _ domain.RecordLock) (domain.Coupling, error) {
		return domain.Coupling{Table: "customer", Key: "ok", Entity: "account\x00", Status: domain.CouplingFailed}, nil
	})
	if !errors.Is(err, domain.ErrStoreRejected) {
		t.Fatalf("writing an entity with NUL: %v, want ErrStoreRejected", err)
	}
}

func TestContract(t *testing.T) {
	storagetest.Run(t, storagetest.Harness{
		Open: func(t *testing.T, claimTTL time.Duration) storage.Store {
			s := open(t)
			if claimTTL > 0 {
				postgres.SetClaimTTL(s, claimTTL)
			}
			return s
		},
		ExpireClaims: func(t *testing.T, key string) {
			admin, err := pgx.Connect(context.Background(), dbURL)
			if err != nil {
				t.Fatal(err)
			}
			defer admin.Close(context.Background())
			if _, err := admin.Exec(context.Background(), `UPDATE record_claims SET until = now() - interval '1 second' WHERE source_key = $1`, key); err != nil {
				t.Fatal(err)
			}
		},
		RowClaims: func(t *testing.T, key string) int {
			admin, err := pgx.Connect(context.Background(), dbURL)
			if err != nil {
				t.Fatal(err)
			}
			defer admin.Close(context.Background())
			var n int
			if err := admin.QueryRow(context.Background(), `SELECT count(*) FROM row_claims WHERE source_key = $1`, key).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		},
		AgeCouplingRuns: func(t *testing.T, table string, d time.Duration) {
			admin, err := pgx.Connect(context.Background(), dbURL)
			if err != nil {
				t.Fatal(err)
			}
			defer admin.Close(context.Background())
			if _, err := admin.Exec(context.Background(), `UPDATE coupling_runs SET started_at = started_at - make_interval(secs => $2),
				heartbeat_at = heartbeat_at - make_interval(secs => $2) WHERE table_name = $1`, table, d.Seconds()); err != nil {
				t.Fatal(err)
			}
		},
	})
}
