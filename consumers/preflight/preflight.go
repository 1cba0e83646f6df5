// Package preflight runs the preflight check (domain.Preflight) in a worker: at start, before the
// first record is consumed, and then periodically. Every gap goes out as a setup error event on the
// errors stream, followed by the check's outcome, from which the projector resolves the preflight
// errors the check no longer finds: the ledger learns of both the way it learns of records' errors.
package preflight

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
)

// Outcomes publishes a check's gaps and outcome (natsjs.Publisher).
type Outcomes interface {
	PublishError(ctx context.Context, ev domain.ErrorEvent) error
	PublishPreflight(ctx context.Context, msgID string, c domain.PreflightChecked) error
}

// Checker checks the setup and publishes what it found.
type Checker struct {
	// Check asks Dataverse (dataverse.Client.Preflight over the worker's mappings).
	Check    func(ctx context.Context) (domain.PreflightReport, error)
	Outcomes Outcomes
	// Every is how often Run checks again; 0 checks only once.
	Every   time.Duration
	Timeout time.Duration // bounds one check; 0 is two minutes
	Log     *slog.Logger
	Now     func() time.Time
}

// Once checks and publishes the gaps, then the outcome. A check that cannot run (Dataverse does
// not answer) publishes nothing: it resolves nothing either, since it does not know.
func (c *Checker) Once(ctx context.Context) (domain.PreflightReport, error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	at := now().UTC()
	rep, err := c.Check(ctx)
	if err != nil {
		return rep, fmt.Errorf("preflight: %w", err)
	}
	check := uuid.NewString()
	// Each check's events have ids of their own: a gap found again adds an occurrence to its open
	// error, and the ids dedupe only a publish retried within one check.
	for _, ev := range rep.ErrorEvents(func(key string) string { return "preflight-" + check + "-" + key }) {
		ev.OccurredAt = at
		ev.CallStack = []domain.Stage{{Name: domain.PreflightStage, At: at, Detail: fmt.Sprintf("%d checks, %d gaps", rep.Checked, len(rep.Gaps))}}
		if err := c.Outcomes.PublishError(ctx, ev); err != nil {
			return rep, fmt.Errorf("preflight: %w", err)
		}
	}
	if err := c.Outcomes.PublishPreflight(ctx, "preflight-"+check, rep.Outcome(at)); err != nil {
		return rep, fmt.Errorf("preflight: %w", err)
	}
	return rep, nil
}

// Run checks every Every until ctx ends (the worker checks once itself before it consumes). A
// check that fails is logged and tried again at the next tick: the worker runs either way.
func (c *Checker) Run(ctx context.Context) error {
	if c.Every <= 0 {
		return nil
	}
	t := time.NewTicker(c.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			c.Logged(ctx)
		}
	}
}

// Logged checks once and logs the outcome instead of returning it.
func (c *Checker) Logged(ctx context.Context) {
	rep, err := c.Once(ctx)
	switch {
	case ctx.Err() != nil:
	case err != nil:
		c.Log.Warn("the preflight check could not run; the worker runs on and checks again later", "err", err)
	case rep.OK():
		c.Log.Info("preflight check passed", "checks", rep.Checked, "user", rep.Principal.UserID)
	default:
		keys := make([]string, 0, len(rep.Gaps))
		for _, g := range rep.Gaps {
			keys = append(keys, g.Key)
		}
		c.Log.Warn("the preflight check found setup gaps; each is a setup error", "gaps", keys, "user", rep.Principal.UserID)
	}
}
