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
	"github.com/dvsync/dvsync/infra/telemetry"
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
	// Every is how often Run checks again; 0 never checks periodically (only at start).
	Every   time.Duration
	Timeout time.Duration // bounds one periodic check; 0 is two minutes
	// StartTimeout bounds the check at start (DVSYNC_PREFLIGHT_START_TIMEOUT; 0 is
	// DefaultStartTimeout): a slow Dataverse must not keep the worker from consuming.
	StartTimeout time.Duration
	Metrics      *telemetry.Metrics // counts checks (dvsync_preflight_checks_total); may be nil
	Log          *slog.Logger
	Now          func() time.Time
}

// DefaultStartTimeout bounds the check at a worker's start.
const DefaultStartTimeout = 30 * time.Second

// Outcome is a check's outcome as dvsync_preflight_checks_total counts it: failed (it could not
// run or publish), gaps, skipped (no gap, but a part was not checked), or ok.
func Outcome(rep domain.PreflightReport, err error) string {
	switch {
	case err != nil:
		return "failed"
	case !rep.OK():
		return "gaps"
	case len(rep.Skipped) > 0:
		return "skipped"
	}
	return "ok"
}

// Once checks and publishes the gaps, then the outcome. A check that cannot run (Dataverse does
// not answer) publishes nothing: it resolves nothing either, since it does not know.
func (c *Checker) Once(ctx context.Context) (domain.PreflightReport, error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	return c.once(ctx, timeout)
}

func (c *Checker) once(ctx context.Context, timeout time.Duration) (domain.PreflightReport, error) {
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

// Start is the check at a worker's start, bounded by StartTimeout: whatever it finds, or if
// Dataverse does not answer in time, it logs and returns, and the worker consumes.
func (c *Checker) Start(ctx context.Context) {
	timeout := c.StartTimeout
	if timeout <= 0 {
		timeout = DefaultStartTimeout
	}
	c.logged(ctx, "start", timeout)
}

// Run checks every Every until ctx ends (the worker checks once itself before it consumes). A
// check that fails is logged and tried again at the next tick: the worker runs either way.
func (c *Checker) Run(ctx context.Context) error {
	if c.Every <= 0 {
		c.Log.Info("periodic setup checks are off (DVSYNC_PREFLIGHT_EVERY is 0): the setup is checked only at start")
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

// Logged is a periodic check: it checks once and logs the outcome instead of returning it.
func (c *Checker) Logged(ctx context.Context) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	c.logged(ctx, "periodic", timeout)
}

func (c *Checker) logged(ctx context.Context, when string, timeout time.Duration) {
	rep, err := c.once(ctx, timeout)
	if ctx.Err() == nil && c.Metrics != nil {
		c.Metrics.PreflightChecks.WithLabelValues(when, Outcome(rep, err)).Inc()
	}
	for _, w := range rep.Warnings {
		c.Log.Warn("the preflight check went on without something it could not read", "when", when, "warning", w)
	}
	for _, s := range rep.Skipped {
		c.Log.Warn("the preflight check skipped a part; its gaps are neither found nor resolved", "when", when, "skipped", s)
	}
	switch {
	case ctx.Err() != nil:
	case err != nil:
		c.Log.Warn("the preflight check could not run; the worker runs on and checks again later", "when", when, "timeout", timeout, "err", err)
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
