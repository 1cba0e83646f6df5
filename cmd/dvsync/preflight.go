package main

import (
	"context"
	"fmt"

	"github.com/dvsync/dvsync/consumers/preflight"
	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/natsjs"
)

// preflightChecker is the worker's periodic setup check, publishing on the errors stream.
func (s *stack) preflightChecker() *preflight.Checker {
	return &preflight.Checker{Check: s.preflight, Outcomes: natsjs.Publisher{JS: s.js}, Every: s.cfg.PreflightEvery,
		Log: s.log.With("component", "preflight")}
}

// preflight checks the setup of every application user the process signs in as: each is a user
// of its own with its own roles. A gap one of them has is reported once, naming the first user
// that has it.
func (s *stack) preflight(ctx context.Context) (domain.PreflightReport, error) {
	var out domain.PreflightReport
	seen := map[string]bool{}
	for i, u := range s.dvUsers {
		rep, err := u.Client.Preflight(ctx, s.mappings)
		if err != nil {
			return domain.PreflightReport{}, fmt.Errorf("app %s: %w", u.Name, err)
		}
		if i == 0 {
			out = rep
			for _, g := range rep.Gaps {
				seen[g.Key] = true
			}
			continue
		}
		out.Checked += rep.Checked
		out.Checks = append(out.Checks, rep.Checks...)
		for _, g := range rep.Gaps {
			if !seen[g.Key] {
				seen[g.Key] = true
				out.Gaps = append(out.Gaps, g)
			}
		}
	}
	return out, nil
}
