// Package replay publishes the stored change of an error again, once its cause is fixed.
package replay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dvsync/dvsync/consumers/syncworker"
	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/events"
	"github.com/dvsync/dvsync/infra/storage"
	"github.com/dvsync/dvsync/infra/telemetry"
)

// Headers on a replayed change.
const (
	HeaderReplayOf      = "Dvsync-Replay-Of"
	HeaderReplayAttempt = "Dvsync-Replay-Attempt"
	HeaderReplayedBy    = "Dvsync-Replayed-By"
)

// Outcome is what a replay of one error did.
type Outcome string

const (
	Published        Outcome = "published"         // the change is on its way to the workers
	Stale            Outcome = "stale"             // a newer version synced since: not sent, the error resolved
	AlreadyReplaying Outcome = "already_replaying" // a concurrent request replays it
	NotReplayable    Outcome = "not_replayable"    // resolved, an invalid event, or no change that may be sent (Detail says why)
	NotFound         Outcome = "not_found"
	Failed           Outcome = "failed"
	// GivenUp is counted (trigger "dependency") when the projector stops retrying a dependency's
	// replay that keeps failing; the errors waiting on it stay open.
	GivenUp Outcome = "given_up"
)

// Result is the outcome of replaying one error.
type Result struct {
	ErrorID   int64   `json:"error_id"`
	Outcome   Outcome `json:"outcome"`
	MessageID string  `json:"message_id,omitempty"`
	Detail    string  `json:"detail,omitempty"`
}

// Store is what replay needs of the ledger and the couplings.
type Store interface {
	ClaimReplay(ctx context.Context, id int64) (storage.ReplayClaim, error)
	ReleaseReplay(ctx context.Context, c storage.ReplayClaim) error
	FinishReplay(ctx context.Context, c storage.ReplayClaim, messageID, actor, outcome string) error
	Coupling(ctx context.Context, table, key string) (domain.Coupling, error)
	WaitingOn(ctx context.Context, table, key string, limit int) ([]int64, error)
}

// Replayer replays errors.
type Replayer struct {
	Store   Store
	JS      jetstream.JetStream
	Log     *slog.Logger
	Metrics *telemetry.Metrics // optional
}

// Replay replays each error once, in order, and says what happened to each.
func (r *Replayer) Replay(ctx context.Context, ids []int64, actor string) []Result {
	out := make([]Result, 0, len(ids))
	trigger := "person"
	if actor == DependencyActor {
		trigger = "dependency"
	}
	for _, id := range ids {
		res := r.one(ctx, id, actor)
		if r.Metrics != nil {
			r.Metrics.Replays.WithLabelValues(trigger, string(res.Outcome)).Inc()
		}
		out = append(out, res)
	}
	return out
}

func (r *Replayer) one(ctx context.Context, id int64, actor string) Result {
	res := Result{ErrorID: id}
	claim, err := r.Store.ClaimReplay(ctx, id)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		res.Outcome = NotFound
		return res
	case errors.Is(err, storage.ErrAlreadyReplaying):
		res.Outcome = AlreadyReplaying
		return res
	case errors.Is(err, storage.ErrNotReplayable):
		res.Outcome = NotReplayable
		var why *storage.NotReplayableError
		if errors.As(err, &why) {
			res.Detail = why.Reason
		}
		return res
	case err != nil:
		res.Outcome, res.Detail = Failed, err.Error()
		return res
	}
	// A change older than what synced since would change nothing: say so instead of sending it.
	if claim.EventVersion != nil {
		c, err := r.Store.Coupling(ctx, claim.Table, claim.Key)
		if err == nil && c.Status == domain.CouplingSynced && c.Version >= *claim.EventVersion {
			res.Outcome, res.Detail = Stale, fmt.Sprintf("version %d synced since; this change is version %d", c.Version, *claim.EventVersion)
			if err := r.Store.FinishReplay(ctx, claim, "", actor, string(Stale)); err != nil {
				res.Outcome, res.Detail = Failed, err.Error()
			}
			return res
		}
	}
	msgID := fmt.Sprintf("dvsync-replay-%d-%d", claim.ErrorID, claim.Attempt)
	msg := &nats.Msg{Subject: subject(claim), Data: claim.Event, Header: replayHeaders(claim.EventHeaders)}
	msg.Header.Set(syncworker.RetryHeader, "true") // a person's retry: a skipped record is sent
	msg.Header.Set(HeaderReplayOf, strconv.FormatInt(claim.ErrorID, 10))
	msg.Header.Set(HeaderReplayAttempt, strconv.Itoa(claim.Attempt))
	msg.Header.Set(HeaderReplayedBy, actor)
	if _, err := r.JS.PublishMsg(ctx, msg, jetstream.WithMsgID(msgID)); err != nil {
		res.Outcome, res.Detail = Failed, err.Error()
		// The next request (or the projector's next try) may replay at once.
		if rerr := r.Store.ReleaseReplay(context.WithoutCancel(ctx), claim); rerr != nil {
			r.Log.Warn("releasing a replay that was not published", "error_id", id, "err", rerr)
		}
		return res
	}
	res.Outcome, res.MessageID = Published, msgID
	if err := r.Store.FinishReplay(ctx, claim, msgID, actor, string(Published)); err != nil {
		r.Log.Warn("replay published but not recorded", "error_id", id, "err", err)
	}
	r.Log.Info("error replayed", "error_id", id, "attempt", claim.Attempt, "table", claim.Table, "key", claim.Key, "by", actor)
	return res
}

// DependencyActor is who the audit trail says replayed a record that waited for a dependency.
const DependencyActor = "dvsync (dependency coupled)"

// waitingBatch bounds one pass over the records waiting on a dependency; the next pass takes the
// rest, because replayed errors are no longer open.
const waitingBatch = 500

// ReplayWaitingOn replays the records that failed because table/key was not coupled, once it is:
// Business Central makes users click Retry for these, dvsync does not. It does nothing while the
// dependency has no Dataverse row, nor when it last synced before failedAt (unless failedAt is
// zero): a record that failed while its dependency was already coupled (its lookup query found
// nothing) would fail again, and replaying it each time its error is stored would never end.
// The error it returns is the first replay that failed; the caller tries again later, and
// records already replayed are not sent twice.
func (r *Replayer) ReplayWaitingOn(ctx context.Context, table, key string, failedAt time.Time) (int, error) {
	c, err := r.Store.Coupling(ctx, table, key)
	if err != nil {
		return 0, err
	}
	if !c.Coupled() || (!failedAt.IsZero() && !c.LastSyncedAt.After(failedAt)) {
		return 0, nil
	}
	replayed := 0
	for {
		ids, err := r.Store.WaitingOn(ctx, table, key, waitingBatch)
		if err != nil || len(ids) == 0 {
			return replayed, err
		}
		left := 0 // errors this pass leaves open, to be found again by the next one
		for _, res := range r.Replay(ctx, ids, DependencyActor) {
			switch res.Outcome {
			case Published:
				replayed++
			case Stale: // resolved
			case Failed:
				return replayed, fmt.Errorf("replay error %d waiting on %s %s: %s", res.ErrorID, table, key, res.Detail)
			default: // under way elsewhere, or no change kept to send
				left++
			}
		}
		if len(ids) < waitingBatch || left == len(ids) {
			return replayed, nil
		}
	}
}

// replayHeaders are the stored change's headers without JetStream's own (Nats-Msg-Id,
// Nats-Expected-*: a replay is a new message, and an expectation about the stream as it was then
// would refuse it for ever) and without an earlier replay's Dvsync-Replay-* headers.
func replayHeaders(stored map[string][]string) nats.Header {
	h := nats.Header{}
	for k, v := range stored {
		lower := strings.ToLower(k)
		if strings.HasPrefix(lower, "nats-") || strings.HasPrefix(lower, "dvsync-replay") {
			continue
		}
		h[k] = v
	}
	return h
}

// subject is where the change was first published, or its table's subject.
func subject(c storage.ReplayClaim) string {
	if strings.HasPrefix(c.Subject, events.SubjectPrefix) {
		return c.Subject
	}
	return events.Subject(c.Table)
}
