package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/microbatch"
	"github.com/dvsync/dvsync/infra/storage"
)

var _ domain.CouplingStore = (*Store)(nil)

const couplingColumns = `row_id, entity, version, status, last_synced_at, skipped, last_error_kind, failures, last_attempt_at, row_version, row_name`

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// scanCoupling reads couplingColumns into c; lead are destinations for columns selected before
// them. A record without a coupling row (all columns NULL) keeps c as it is.
func scanCoupling(row pgx.Row, c *domain.Coupling, lead ...any) error {
	var (
		rowID    *uuid.UUID
		entity   *string
		version  *int64
		status   *string
		synced   *time.Time
		skipped  *bool
		kind     *string
		failures *int
		attempt  *time.Time
		rowVer   *string
		rowName  *string
	)
	dest := append(lead, &rowID, &entity, &version, &status, &synced, &skipped, &kind, &failures, &attempt, &rowVer, &rowName)
	if err := row.Scan(dest...); err != nil {
		return err
	}
	if status == nil {
		return nil
	}
	c.Exists, c.Status, c.Entity, c.Version = true, domain.CouplingStatus(*status), *entity, *version
	c.Skipped, c.LastErrorKind, c.Failures, c.RowVersion, c.RowName = *skipped, domain.Kind(*kind), *failures, *rowVer, *rowName
	if rowID != nil {
		c.RowID = *rowID
	}
	if synced != nil {
		c.LastSyncedAt = *synced
	}
	if attempt != nil {
		c.LastAttemptAt = *attempt
	}
	return nil
}

// recordKey names one record.
type recordKey struct{ table, key string }

func unseen(k recordKey) domain.Coupling {
	return domain.Coupling{Table: k.table, Key: k.key, Version: domain.NoVersion}
}

// readCoupling reads one record's coupling on q (a transaction that needs it in its snapshot).
func readCoupling(ctx context.Context, q querier, table, key string) (domain.Coupling, error) {
	c := unseen(recordKey{table, key})
	err := scanCoupling(q.QueryRow(ctx, `SELECT `+couplingColumns+` FROM couplings WHERE table_name = $1 AND source_key = $2`, table, key), &c)
	if errors.Is(err, pgx.ErrNoRows) {
		return unseen(recordKey{table, key}), nil
	}
	if err != nil {
		return c, rejected(fmt.Errorf("postgres: read coupling %s/%s: %w", table, key, err))
	}
	return c, nil
}

// Coupling returns a record's coupling; a record never seen has Exists false and NoVersion.
// Reads made at the same time by many lanes go to the database as one query.
func (s *Store) Coupling(ctx context.Context, table, key string) (domain.Coupling, error) {
	io := s.couplingIO()
	if io == nil {
		return domain.Coupling{}, microbatch.ErrClosed
	}
	return io.reads.Do(ctx, recordKey{table, key})
}

// UpdateCoupling claims the record, runs update, and stores what it returns while releasing the
// claim, in one statement. No transaction is open while update runs (it calls Dataverse): the
// claim is a row with a lease, renewed while the worker lives, so that workers in any process
// update one record one at a time without holding a database connection for it. A record another
// worker holds is domain.ErrRecordBusy at once, for the caller to try again; a claim lost while
// update ran (its lease ran out) stores nothing and is storage.ErrLockLost.
//
// The claims, reads and writes of many lanes at once go to the database together: one round trip
// claims and reads a batch of records, one stores and releases them.
func (s *Store) UpdateCoupling(ctx context.Context, table, key string, update func(context.Context, domain.Coupling, domain.RecordLock) (domain.Coupling, error)) error {
	c, current, err := s.claimRecord(ctx, table, key)
	if err != nil {
		return err
	}
	io := c.io
	defer io.drop(c)
	next, err := update(ctx, current, c)
	release := commit{claim: c}
	if err == nil {
		release.next = &next
	}
	// The claim is released even when the caller has given up, so that the record is free at
	// once; within a bound, so that a database that stopped answering cannot hold a lane for ever.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storage.CommitTimeout)
	done, cerr := io.commits.Do(cctx, release)
	cancel()
	if cerr != nil {
		io.release(c) // nothing was stored unless the statement went through: the lease says so
	}
	return storage.UpdateOutcome(err, cerr, done, table, key)
}

// claimRecord claims one record and reads its coupling, for UpdateCoupling and EditCoupling; the
// caller drops the claim (c.io.drop) when done. A record another worker holds is
// domain.ErrRecordBusy.
func (s *Store) claimRecord(ctx context.Context, table, key string) (*claim, domain.Coupling, error) {
	io := s.couplingIO()
	if io == nil {
		return nil, domain.Coupling{}, microbatch.ErrClosed
	}
	c := &claim{key: recordKey{table, key}, token: uuid.New(), io: io}
	io.hold(c)
	got, err := io.claims.Do(ctx, c)
	if err != nil {
		// The claim may have been taken all the same (the caller stopped waiting, the answer was
		// lost): give it back, so that the record is not busy to its own next attempt.
		io.release(c)
		io.drop(c)
		return nil, domain.Coupling{}, err
	}
	if !got.claimed {
		io.drop(c)
		return nil, domain.Coupling{}, fmt.Errorf("%w: %s/%s", domain.ErrRecordBusy, table, key)
	}
	return c, got.current, nil
}

// claim is one UpdateCoupling's hold on a record: domain.RecordLock.
type claim struct {
	key   recordKey
	token uuid.UUID
	io    *couplingIO

	lease storage.Lease // by the worker's clock, margin taken off
}

// Held reports whether the claim still holds: its lease has not run out by the worker's clock,
// and the database still has it. It is asked before a write that would overwrite a row another
// write changed, so the extra query is rare.
func (c *claim) Held(ctx context.Context) error {
	if err := c.lease.Check(c.key.table, c.key.key); err != nil {
		return err
	}
	var held bool
	err := c.io.store.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM record_claims WHERE table_name = $1 AND source_key = $2
		AND token = $3 AND until > now())`, c.key.table, c.key.key, c.token.String()).Scan(&held)
	if err != nil {
		return fmt.Errorf("%w: %w", storage.ErrLockLost, err)
	}
	if !held {
		return fmt.Errorf("%w: %s/%s: another worker has it", storage.ErrLockLost, c.key.table, c.key.key)
	}
	return nil
}

// release gives a claim back by itself, at once and at most once: after a failed claim or commit
// statement, whose effect is unknown. A release that fails too leaves the lease to run out.
func (io *couplingIO) release(c *claim) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = io.store.pool.Exec(ctx, `WITH rows AS (DELETE FROM row_claims WHERE token = $1) DELETE FROM record_claims WHERE token = $1`, c.token.String())
}

type claimed struct {
	claimed bool
	current domain.Coupling
}

type commit struct {
	claim *claim
	next  *domain.Coupling // nil: release only
}

// couplingIO batches the coupling reads, claims and writes of all lanes, and renews the claims
// they hold.
type couplingIO struct {
	store   *Store
	ttl     time.Duration // a claim's lease
	reads   *microbatch.Batcher[recordKey, domain.Coupling]
	claims  *microbatch.Batcher[*claim, claimed]
	commits *microbatch.Batcher[commit, bool]
	// rowClaims are the rows records claim before they are coupled to them (match.go).
	rowClaims *microbatch.Batcher[rowClaim, struct{}]

	mu   sync.Mutex
	held map[*claim]struct{}
	quit chan struct{}
	wg   sync.WaitGroup
}

// batchConfig lets the first statement go at once and gathers what comes while statements run:
// batches grow with the load without adding a linger to a lone call.
var batchConfig = microbatch.Config{MaxSize: 500, Linger: 0, MaxInFlight: 3}

func (s *Store) couplingIO() *couplingIO {
	s.ioOnce.Do(func() {
		io := &couplingIO{store: s, ttl: cmp.Or(s.claimTTL, storage.ClaimTTL), held: map[*claim]struct{}{}, quit: make(chan struct{})}
		io.reads = microbatch.New(batchConfig, io.readBatch)
		io.claims = microbatch.New(batchConfig, io.claimBatch)
		io.commits = microbatch.New(batchConfig, io.commitBatch)
		io.rowClaims = microbatch.New(batchConfig, io.rowClaimBatch)
		io.wg.Add(1)
		go io.renew()
		s.io = io
	})
	return s.io
}

// trusted is how long after sending a claim or renewal statement the worker relies on the lease.
func (io *couplingIO) trusted() time.Duration { return storage.Trusted(io.ttl) }

func (io *couplingIO) close() {
	io.reads.Close()
	io.claims.Close()
	io.commits.Close()
	io.rowClaims.Close()
	close(io.quit)
	io.wg.Wait()
}

func (io *couplingIO) hold(c *claim) { io.mu.Lock(); io.held[c] = struct{}{}; io.mu.Unlock() }
func (io *couplingIO) drop(c *claim) { io.mu.Lock(); delete(io.held, c); io.mu.Unlock() }

// renew extends the leases of every claim this process holds, every third of ClaimTTL.
func (io *couplingIO) renew() {
	defer io.wg.Done()
	t := time.NewTicker(io.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-io.quit:
			return
		case <-t.C:
		}
		io.mu.Lock()
		held := make([]*claim, 0, len(io.held))
		tokens := make([]string, 0, len(io.held))
		for c := range io.held {
			held = append(held, c)
			tokens = append(tokens, c.token.String())
		}
		io.mu.Unlock()
		if len(held) == 0 {
			continue
		}
		sent := time.Now()
		renewed, err := io.renewOnce(tokens)
		if err != nil {
			continue // the leases run out unless a later renewal gets through
		}
		for _, c := range held {
			if renewed[c.token.String()] {
				c.lease.Extend(sent.Add(io.trusted()))
			}
		}
	}
}

// renewOnce extends the leases of the given claims that are still live. Rows a claim or commit
// statement has locked are skipped (their holder's commit releases them, or the next renewal
// gets them), so that the renewal never waits for, or deadlocks with, those statements.
func (io *couplingIO) renewOnce(tokens []string) (map[string]bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), io.ttl/3)
	defer cancel()
	rows, err := io.store.pool.Query(ctx, `UPDATE record_claims SET until = now() + $2 * interval '1 millisecond'
		WHERE (table_name, source_key) IN (
			SELECT table_name, source_key FROM record_claims WHERE token = ANY($1::uuid[]) AND until > now()
			FOR UPDATE SKIP LOCKED)
		RETURNING token::text`, tokens, io.ttl.Milliseconds())
	if err != nil {
		return nil, err
	}
	renewed := map[string]bool{}
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			rows.Close()
			return nil, err
		}
		renewed[t] = true
	}
	return renewed, rows.Err()
}

// readBatch reads the couplings of a batch of records in one query.
func (io *couplingIO) readBatch(ctx context.Context, keys []recordKey) ([]domain.Coupling, []error) {
	return perItemOnDataError(keys, func(keys []recordKey) ([]domain.Coupling, error) {
		tables, sources := splitKeys(keys)
		rows, err := io.store.pool.Query(ctx, `SELECT u.i, `+prefixed("c.", couplingColumns)+`
			FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(t, k, i)
			LEFT JOIN couplings c ON c.table_name = u.t AND c.source_key = u.k`, tables, sources)
		if err != nil {
			return nil, fmt.Errorf("postgres: read couplings: %w", err)
		}
		out := make([]domain.Coupling, len(keys))
		for i, k := range keys {
			out[i] = unseen(k)
		}
		for rows.Next() {
			var i int64
			var c domain.Coupling
			if err := scanCoupling(rows, &c, &i); err != nil {
				rows.Close()
				return nil, fmt.Errorf("postgres: read couplings: %w", err)
			}
			c.Table, c.Key = keys[i-1].table, keys[i-1].key
			if !c.Exists {
				c.Version = domain.NoVersion
			}
			out[i-1] = c
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("postgres: read couplings: %w", err)
		}
		return out, nil
	})
}

// claimBatch claims a batch of records and reads the coupling of each one it got, in one round
// trip of two statements: the read comes after the claim, so it sees what the previous holder
// stored when it released the record.
func (io *couplingIO) claimBatch(ctx context.Context, cs []*claim) ([]claimed, []error) {
	return perItemOnDataError(cs, func(cs []*claim) ([]claimed, error) {
		out := make([]claimed, len(cs))
		keys := make([]recordKey, 0, len(cs))
		tokens := make([]string, 0, len(cs))
		first := map[recordKey]bool{} // one statement may not claim a record twice
		for _, c := range cs {
			if !first[c.key] {
				first[c.key] = true
				keys = append(keys, c.key)
				tokens = append(tokens, c.token.String())
			}
		}
		tables, sources := splitKeys(keys)
		sent := time.Now()
		b := &pgx.Batch{}
		b.Queue(`INSERT INTO record_claims (table_name, source_key, token, until)
			SELECT t, k, tok, now() + $4 * interval '1 millisecond' FROM unnest($1::text[], $2::text[], $3::uuid[]) AS u(t, k, tok)
			ORDER BY t, k -- every statement locks claim rows in key order: two never deadlock
			ON CONFLICT (table_name, source_key) DO UPDATE SET token = EXCLUDED.token, until = EXCLUDED.until
			WHERE record_claims.until <= now()`, tables, sources, tokens, io.ttl.Milliseconds())
		b.Queue(`SELECT r.token::text, `+prefixed("c.", couplingColumns)+`
			FROM record_claims r LEFT JOIN couplings c ON c.table_name = r.table_name AND c.source_key = r.source_key
			WHERE r.token = ANY($1::uuid[])`, tokens)
		res := io.store.pool.SendBatch(ctx, b)
		defer res.Close()
		if _, err := res.Exec(); err != nil {
			return nil, fmt.Errorf("postgres: claim records: %w", err)
		}
		rows, err := res.Query()
		if err != nil {
			return nil, fmt.Errorf("postgres: claim records: %w", err)
		}
		got := map[string]domain.Coupling{}
		for rows.Next() {
			var token string
			var c domain.Coupling
			if err := scanCoupling(rows, &c, &token); err != nil {
				rows.Close()
				return nil, fmt.Errorf("postgres: claim records: %w", err)
			}
			got[token] = c
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("postgres: claim records: %w", err)
		}
		for i, c := range cs {
			cur, ok := got[c.token.String()]
			if !ok {
				continue // another worker holds it
			}
			cur.Table, cur.Key = c.key.table, c.key.key
			if !cur.Exists {
				cur.Version = domain.NoVersion
			}
			c.lease.Extend(sent.Add(io.trusted()))
			out[i] = claimed{claimed: true, current: cur}
		}
		return out, nil
	})
}

// commitBatch stores the couplings of a batch and releases its claims (and their row claims) in
// one statement. A record whose claim is no longer this worker's is neither stored nor released
// (its row claims, dead with the claim, are deleted): its result is false. A coupling the unique index on a row's live couplings refuses fails that
// record alone, as a *domain.RowTakenError: the batch is tried again without it.
func (io *couplingIO) commitBatch(ctx context.Context, cs []commit) ([]bool, []error) {
	outs, errs := io.commitEach(ctx, cs)
	for i, err := range errs {
		if isRowTaken(err) {
			errs[i] = io.store.rowTaken(ctx, cs[i].next, err)
		}
	}
	return outs, errs
}

// commitEach is commitBatch's statement, run on the whole batch, or on each item alone when the
// database refuses one of them (perItemOnDataError).
func (io *couplingIO) commitEach(ctx context.Context, cs []commit) ([]bool, []error) {
	return perItemOnDataError(cs, func(cs []commit) ([]bool, error) {
		n := len(cs)
		// One array per column, for unnest.
		tables, sources, tokens := make([]string, n), make([]string, n), make([]string, n)
		entities, statuses, kinds, rowVersions, rowNames := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		writes, skipped, rowIDs := make([]bool, n), make([]bool, n), make([]*string, n)
		versions, failures := make([]int64, n), make([]int32, n)
		synced, attempted := make([]*time.Time, n), make([]*time.Time, n)
		for i, c := range cs {
			tables[i], sources[i], tokens[i] = c.claim.key.table, c.claim.key.key, c.claim.token.String()
			if c.next == nil {
				continue
			}
			next := c.next
			writes[i] = true
			if next.RowID != uuid.Nil {
				id := next.RowID.String()
				rowIDs[i] = &id
			}
			entities[i], versions[i], statuses[i] = next.Entity, next.Version, string(next.Status)
			synced[i], skipped[i], kinds[i] = optionalTime(next.LastSyncedAt), next.Skipped, string(next.LastErrorKind)
			failures[i], attempted[i], rowVersions[i] = int32(next.Failures), optionalTime(next.LastAttemptAt), next.RowVersion
			rowNames[i] = rowName(next.RowName)
		}
		rows, err := io.store.pool.Query(ctx, `
			WITH items AS (
				SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::bool[], $5::uuid[], $6::text[], $7::bigint[],
					$8::text[], $9::timestamptz[], $10::bool[], $11::text[], $12::int[], $13::timestamptz[], $14::text[], $15::text[])
					AS u(t, k, tok, w, row_id, entity, version, status, last_synced_at, skipped, last_error_kind, failures, last_attempt_at, row_version, row_name)),
			mine AS (
				SELECT r.table_name, r.source_key FROM record_claims r JOIN items i
					ON r.table_name = i.t AND r.source_key = i.k AND r.token = i.tok
				ORDER BY r.table_name, r.source_key -- locked in key order, as the claims are
				FOR UPDATE OF r),
			released AS (
				DELETE FROM record_claims r USING mine m
				WHERE r.table_name = m.table_name AND r.source_key = m.source_key
				RETURNING r.token),
			-- A lost claim's row claims are dead (its token holds no record claim) and go too:
			-- nothing else would ever delete them.
			rows_mine AS (
				SELECT rc.entity, rc.row_id FROM row_claims rc JOIN items i ON rc.token = i.tok
				ORDER BY rc.entity, rc.row_id -- locked in key order, as claimRows locks them
				FOR UPDATE OF rc),
			rows_released AS (
				DELETE FROM row_claims rc USING rows_mine m WHERE rc.entity = m.entity AND rc.row_id = m.row_id),
			written AS (
				INSERT INTO couplings (table_name, source_key, `+couplingColumns+`, updated_at)
				SELECT i.t, i.k, i.row_id, i.entity, i.version, i.status, i.last_synced_at, i.skipped, i.last_error_kind,
					i.failures, i.last_attempt_at, i.row_version, i.row_name, now()
				FROM items i JOIN released r ON r.token = i.tok WHERE i.w
				-- In row order: a second live coupling of a row waits on the unique index for the
				-- first's transaction, so two batches writing rows in one order never deadlock. (A
				-- record's coupling is written by the one batch holding its claim.)
				ORDER BY i.entity, i.row_id, i.t, i.k
				ON CONFLICT (table_name, source_key) DO UPDATE SET
					row_id = EXCLUDED.row_id, entity = EXCLUDED.entity, version = EXCLUDED.version,
					status = EXCLUDED.status, last_synced_at = EXCLUDED.last_synced_at,
					skipped = EXCLUDED.skipped, last_error_kind = EXCLUDED.last_error_kind,
					failures = EXCLUDED.failures, last_attempt_at = EXCLUDED.last_attempt_at,
					row_version = EXCLUDED.row_version, row_name = EXCLUDED.row_name, updated_at = now()
				RETURNING 1)
			SELECT token::text FROM released`,
			tables, sources, tokens, writes, rowIDs, entities, versions, statuses, synced, skipped, kinds, failures, attempted, rowVersions, rowNames)
		if err != nil {
			return nil, fmt.Errorf("postgres: write couplings: %w", err)
		}
		mine := map[string]bool{}
		for rows.Next() {
			var token string
			if err := rows.Scan(&token); err != nil {
				rows.Close()
				return nil, fmt.Errorf("postgres: write couplings: %w", err)
			}
			mine[token] = true
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("postgres: write couplings: %w", err)
		}
		out := make([]bool, n)
		for i, t := range tokens {
			out[i] = mine[t]
		}
		return out, nil
	})
}

// perItemOnDataError runs run on the whole batch; when the database refuses a value (one record's
// data it cannot hold, or a second coupling of a row) it runs each item alone, so that only that
// record is rejected.
func perItemOnDataError[In, Out any](items []In, run func([]In) ([]Out, error)) ([]Out, []error) {
	outs, err := run(items)
	errs := make([]error, len(items))
	if err == nil {
		return outs, errs
	}
	if !IsDataError(err) && !isRowTaken(err) || len(items) == 1 {
		outs = make([]Out, len(items))
		for i := range errs {
			errs[i] = rejected(err)
		}
		return outs, errs
	}
	outs = make([]Out, len(items))
	for i := range items {
		o, e := perItemOnDataError(items[i:i+1], run)
		outs[i], errs[i] = o[0], e[0]
	}
	return outs, errs
}

func splitKeys(keys []recordKey) (tables, sources []string) {
	tables, sources = make([]string, len(keys)), make([]string, len(keys))
	for i, k := range keys {
		tables[i], sources[i] = k.table, k.key
	}
	return tables, sources
}

// prefixed qualifies each of a comma-separated column list.
func prefixed(prefix, columns string) string {
	cols := strings.Split(columns, ",")
	for i, c := range cols {
		cols[i] = prefix + strings.TrimSpace(c)
	}
	return strings.Join(cols, ", ")
}

// rejected marks err as the record's data being refused by PostgreSQL (IsDataError), so that
// callers report it instead of retrying it for ever.
func rejected(err error) error {
	var pg *pgconn.PgError
	if IsDataError(err) && errors.As(err, &pg) {
		return &storage.RejectedError{Reason: fmt.Sprintf("PostgreSQL refused a value: %s (SQLSTATE %s)", pg.Message, pg.Code), Err: err}
	}
	return err
}

// rowName is a row's primary name as stored: Dataverse allows up to 4000 characters, and any
// text a mapping sends; the page only shows it.
func rowName(name string) string { return storage.Clean(name, storage.IDMax) }

func optionalTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
