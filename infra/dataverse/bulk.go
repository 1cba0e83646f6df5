package dataverse

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/domain"
)

// Table names a Dataverse table for the bulk actions, which need its logical name (for
// @odata.type) and primary key attribute besides its entity set.
type Table struct {
	LogicalName string
	EntitySet   string
	PrimaryID   string
}

// Target is one record of a bulk call: its row id (uuid.Nil lets CreateMultiple choose) and values.
type Target struct {
	ID    uuid.UUID
	Attrs domain.Attributes
}

// CreateMultiple creates the targets with Dataverse's CreateMultiple action and returns each
// target's row id or error. On standard tables the action is one transaction that fails whole
// and names no record; the client then splits the targets in halves and tries again, down to the
// failing records, so that every other record is written and each failure is its own. A
// transient failure (throttling, Dataverse down) is returned for every target, untried.
func (c *Client) CreateMultiple(ctx context.Context, t Table, targets []Target) ([]uuid.UUID, []error) {
	ids := make([]uuid.UUID, len(targets))
	errs := c.bisect(ctx, targets, func(part []Target, offset int) error {
		resp, err := c.bulkCall(ctx, t, "CreateMultiple", part)
		if err != nil {
			return err
		}
		var body struct{ Ids []uuid.UUID }
		if err := json.Unmarshal(resp.body, &body); err != nil || len(body.Ids) != len(part) {
			return fmt.Errorf("dataverse: CreateMultiple %s: the answer has %d ids for %d targets", t.EntitySet, len(body.Ids), len(part))
		}
		copy(ids[offset:], body.Ids)
		return nil
	}, 0)
	return ids, errs
}

// UpsertMultiple creates or updates the targets by their row ids, with the same per-record
// outcomes as CreateMultiple.
func (c *Client) UpsertMultiple(ctx context.Context, t Table, targets []Target) []error {
	return c.bisect(ctx, targets, func(part []Target, _ int) error {
		_, err := c.bulkCall(ctx, t, "UpsertMultiple", part)
		return err
	}, 0)
}

// UpdateMultiple updates existing rows by their ids.
func (c *Client) UpdateMultiple(ctx context.Context, t Table, targets []Target) []error {
	return c.bisect(ctx, targets, func(part []Target, _ int) error {
		_, err := c.bulkCall(ctx, t, "UpdateMultiple", part)
		return err
	}, 0)
}

// bisect calls call on targets and, when it fails permanently, on each half, until every failing
// target stands alone. It returns one error (or nil) per target.
func (c *Client) bisect(ctx context.Context, targets []Target, call func([]Target, int) error, offset int) []error {
	errs := make([]error, len(targets))
	err := call(targets, offset)
	if err == nil {
		return errs
	}
	if f := domain.ClassifyDataverse(err); len(targets) == 1 || f == nil || f.Transient() {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	half := len(targets) / 2
	copy(errs, c.bisect(ctx, targets[:half], call, offset))
	copy(errs[half:], c.bisect(ctx, targets[half:], call, offset+half))
	return errs
}

func (c *Client) bulkCall(ctx context.Context, t Table, action string, targets []Target) (*response, error) {
	list := make([]domain.Attributes, len(targets))
	for i, tg := range targets {
		a := make(domain.Attributes, len(tg.Attrs)+2)
		for k, v := range tg.Attrs {
			a[k] = v
		}
		a["@odata.type"] = "Microsoft.Dynamics.CRM." + t.LogicalName // required on every target
		if tg.ID != uuid.Nil {
			a[t.PrimaryID] = tg.ID.String()
		}
		list[i] = a
	}
	payload, err := json.Marshal(map[string]any{"Targets": list})
	if err != nil {
		return nil, fmt.Errorf("dataverse: encode %s: %w", action, err)
	}
	return c.send(ctx, http.MethodPost, t.EntitySet, t.EntitySet+"/Microsoft.Dynamics.CRM."+action, payload,
		"application/json", c.writeHeaders)
}
