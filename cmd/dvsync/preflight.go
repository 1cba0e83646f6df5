package main

import (
	"context"
	"fmt"
	"time"

	"github.com/dvsync/dvsync/consumers/preflight"
	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/dataverse"
	"github.com/dvsync/dvsync/infra/natsjs"
	"github.com/dvsync/dvsync/infra/redact"
	"github.com/dvsync/dvsync/infra/storage"
)

// preflightChecker is the worker's setup check at start and periodically, publishing on the
// errors stream.
func (s *stack) preflightChecker() *preflight.Checker {
	return &preflight.Checker{Check: s.preflight, Outcomes: natsjs.Publisher{JS: s.js}, Every: s.cfg.PreflightEvery,
		StartTimeout: s.cfg.PreflightStartTimeout, Metrics: s.metrics, Log: s.log.With("component", "preflight")}
}

// ledgerReadTimeout bounds the preflight's read of the currency couplings: a ledger that does
// not answer skips that part rather than holding up the check.
const ledgerReadTimeout = 5 * time.Second

// preflight checks the setup of every application user the process signs in as: each is a user
// of its own with its own roles. A gap one of them has is reported once, naming the first user
// that has it.
func (s *stack) preflight(ctx context.Context) (domain.PreflightReport, error) {
	opt := dataverse.PreflightOptions{LocalCurrency: s.cfg.LocalCurrency}
	opt.CurrencyCouplings, opt.CouplingsSkipped = s.currencyCouplings(ctx)
	var out domain.PreflightReport
	seen := map[string]bool{}
	for i, u := range s.dvUsers {
		rep, err := u.Client.Preflight(ctx, s.mappings, opt)
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
		out.Warnings = append(out.Warnings, rep.Warnings...)
		for _, g := range rep.Gaps {
			if !seen[g.Key] {
				seen[g.Key] = true
				out.Gaps = append(out.Gaps, g)
			}
		}
	}
	return out, nil
}

// currencyCouplings are the coupled records of the currency table, or why they are not known.
func (s *stack) currencyCouplings(ctx context.Context) ([]domain.Coupling, string) {
	table := s.mappings.CurrencyTable()
	if table == "" {
		return nil, ""
	}
	if s.store == nil {
		return nil, "this command does not read the ledger"
	}
	ctx, cancel := context.WithTimeout(ctx, ledgerReadTimeout)
	defer cancel()
	cs, err := s.store.ListCouplings(ctx, storage.CouplingFilter{Table: table, Limit: 1000})
	if err != nil {
		return nil, "the ledger did not answer: " + redact.Text(err.Error())
	}
	return cs, ""
}
