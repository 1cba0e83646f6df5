package main

// Reading the system's state back: the emulator's rows, the couplings and the errors ledger in
// PostgreSQL, the durable consumers in JetStream, and the processes.

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dvsync/dvsync/infra/natsjs"
	"github.com/dvsync/dvsync/internal/testbed"
)

// Observer reads snapshots of one scenario's system.
type Observer struct {
	Emu *testbed.Emulator
	DB  *pgxpool.Pool
	JS  jetstream.JetStream
	Sup *testbed.Supervisor
	// Health are the /healthz URLs of the dvsync processes that should be running.
	Health func() map[string]string
}

// Snapshot reads everything once. An error means a part did not answer (it may be down for the
// fault); the caller tries again.
func (o *Observer) Snapshot(ctx context.Context) (Snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	s := Snapshot{Couplings: map[string]Coupling{}, OccurrenceSeqs: map[uint64]bool{}}
	rows, err := o.Emu.Rows(ctx, "accounts")
	if err != nil {
		return s, err
	}
	for _, r := range rows {
		s.Rows = append(s.Rows, Row{ID: str(r["accountid"]), Number: str(r["accountnumber"]), Name: str(r["name"])})
	}
	if err := o.readCouplings(ctx, &s); err != nil {
		return s, err
	}
	if err := o.readErrors(ctx, &s); err != nil {
		return s, err
	}
	s.Backlogs = o.backlogs(ctx)
	s.Exited = o.Sup.Exits()
	if o.Health != nil {
		health := o.Health()
		for _, name := range sortedKeys(health) {
			if !testbed.Healthy(ctx, health[name]) {
				s.Exited = append(s.Exited, name+" is not healthy ("+health[name]+")")
			}
		}
	}
	return s, nil
}

func str(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return ""
}

func (o *Observer) readCouplings(ctx context.Context, s *Snapshot) error {
	rows, err := o.DB.Query(ctx, `SELECT table_name, source_key, version, status, skipped, last_error_kind FROM couplings`)
	if err != nil {
		return fmt.Errorf("read couplings: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var table, key string
		var c Coupling
		if err := rows.Scan(&table, &key, &c.Version, &c.Status, &c.Skipped, &c.LastErrorKind); err != nil {
			return err
		}
		s.Couplings[table+"/"+key] = c
	}
	return rows.Err()
}

func (o *Observer) readErrors(ctx context.Context, s *Snapshot) error {
	rows, err := o.DB.Query(ctx, `SELECT id, kind, table_name, source_key, status, coalesce(event_id, ''), event_version,
			coalesce(delivery->>'sequence', '') FROM sync_errors ORDER BY id`)
	if err != nil {
		return fmt.Errorf("read sync_errors: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var e LedgerError
		var seq string
		if err := rows.Scan(&e.ID, &e.Kind, &e.Table, &e.Key, &e.Status, &e.EventID, &e.EventVersion, &seq); err != nil {
			return err
		}
		e.Seq, _ = strconv.ParseUint(seq, 10, 64)
		s.Errors = append(s.Errors, e)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	occ, err := o.DB.Query(ctx, `SELECT coalesce(delivery->>'sequence', '') FROM sync_error_occurrences`)
	if err != nil {
		return fmt.Errorf("read sync_error_occurrences: %w", err)
	}
	defer occ.Close()
	for occ.Next() {
		var seq string
		if err := occ.Scan(&seq); err != nil {
			return err
		}
		if n, err := strconv.ParseUint(seq, 10, 64); err == nil {
			s.OccurrenceSeqs[n] = true
		}
	}
	return occ.Err()
}

// backlogs reads the workers' consumer on the changes stream and the projector's on the errors
// stream (a push consumer watermill names from the prefix dvsync-projector).
func (o *Observer) backlogs(ctx context.Context) []Backlog {
	return append(o.backlog(ctx, natsjs.ChangesStream, natsjs.WorkerConsumer),
		o.backlog(ctx, natsjs.ErrorsStream, natsjs.ProjectorConsumer)...)
}

// backlog reads the consumers of stream whose names start with prefix; there must be one.
func (o *Observer) backlog(ctx context.Context, stream, prefix string) []Backlog {
	fail := func(err error) []Backlog { return []Backlog{{Consumer: prefix, Err: err.Error()}} }
	s, err := o.JS.Stream(ctx, stream)
	if err != nil {
		return fail(err)
	}
	var out []Backlog
	lister := s.ListConsumers(ctx)
	for info := range lister.Info() {
		if strings.HasPrefix(info.Name, prefix) {
			out = append(out, Backlog{Consumer: info.Name, Pending: info.NumPending, AckPending: uint64(info.NumAckPending)})
		}
	}
	if err := lister.Err(); err != nil {
		return fail(err)
	}
	if len(out) == 0 {
		return fail(fmt.Errorf("no consumer on %s", stream))
	}
	slices.SortFunc(out, func(a, b Backlog) int { return strings.Compare(a.Consumer, b.Consumer) })
	return out
}

// Fingerprint changes whenever anything the checker reads changes.
func Fingerprint(s Snapshot) uint64 {
	h := fnv.New64a()
	for _, r := range s.Rows {
		fmt.Fprintf(h, "r%s|%s|%s\n", r.ID, r.Number, r.Name)
	}
	for _, k := range sortedKeys(s.Couplings) {
		c := s.Couplings[k]
		fmt.Fprintf(h, "c%s|%d|%s|%t|%s\n", k, c.Version, c.Status, c.Skipped, c.LastErrorKind)
	}
	for _, e := range s.Errors {
		fmt.Fprintf(h, "e%d|%s|%s|%s\n", e.ID, e.Status, version(e.EventVersion), e.Key)
	}
	fmt.Fprintf(h, "o%d\n", len(s.OccurrenceSeqs))
	for _, b := range s.Backlogs {
		fmt.Fprintf(h, "b%s|%d|%d|%s\n", b.Consumer, b.Pending, b.AckPending, b.Err)
	}
	fmt.Fprintf(h, "x%v\n", s.Exited)
	return h.Sum64()
}

// Settle bounds how the suite waits for a state to be final.
type Settle struct {
	// Quiet: the consumers are drained and nothing changed this long, yet a rule breaks: the
	// state is final, and wrong.
	Quiet time.Duration
	// Stuck: work is left on a consumer and nothing changed this long.
	Stuck time.Duration
	// Deadline bounds the whole wait.
	Deadline time.Duration
}

// Outcome is how a wait for the final state ended.
type Outcome struct {
	Report Report
	// At is when the state was final: when every rule first held, or the last change before it
	// settled wrong. Final is false when it never was (stuck, or the deadline).
	At    time.Time
	Final bool
	Note  string // why the wait ended, when not every rule held
}

// Converge observes until every rule holds, or the state settles wrong, or gets stuck, or the
// deadline passes.
func Converge(ctx context.Context, o *Observer, e Expect, st Settle) Outcome {
	start := time.Now()
	var (
		last       Outcome
		lastFP     uint64
		lastChange = start
		lastErr    error
		seen       bool
	)
	for {
		s, err := o.Snapshot(ctx)
		now := time.Now()
		if err == nil {
			lastErr = nil
			rep := Check(e, s)
			if rep.OK() {
				return Outcome{Report: rep, At: now, Final: true}
			}
			if fp := Fingerprint(s); !seen || fp != lastFP {
				lastFP, lastChange, seen = fp, now, true
			}
			last = Outcome{Report: rep, At: lastChange}
			quiet := now.Sub(lastChange)
			drained := !slices.ContainsFunc(rep.Breaks, func(b Break) bool { return b.Rule == RuleBacklog || b.Rule == RuleConsumer })
			switch {
			case drained && quiet >= st.Quiet:
				last.Final, last.Note = true, fmt.Sprintf("settled: nothing changed for %s with the consumers drained", st.Quiet)
				return last
			case !drained && quiet >= st.Stuck:
				last.Note = fmt.Sprintf("stuck: nothing changed for %s with work left on a consumer", st.Stuck)
				return last
			}
		} else {
			lastErr = err
		}
		if now.Sub(start) >= st.Deadline || ctx.Err() != nil {
			last.Note = fmt.Sprintf("deadline of %s passed", st.Deadline)
			if lastErr != nil {
				last.Note += "; last read failed: " + lastErr.Error()
			}
			if ctx.Err() != nil {
				last.Note = "interrupted"
			}
			if !seen {
				last.Report.Breaks = append(last.Report.Breaks, Break{Rule: "the system could not be read", Count: 1,
					Examples: []string{errors.Join(lastErr, ctx.Err()).Error()}})
			}
			return last
		}
		_ = testbed.Sleep(ctx, time.Second)
	}
}
