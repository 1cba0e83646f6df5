package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/dvsync/dvsync/consumers/preflight"
	"github.com/dvsync/dvsync/domain"
)

// errSetupGaps is doctor's exit status 1: the check ran and found gaps.
type errSetupGaps int

func (n errSetupGaps) Error() string {
	return fmt.Sprintf("%d setup gaps: each is a setup error once a worker checks", int(n))
}

// runDoctor is `dvsync doctor`: the worker's preflight check, asked of Dataverse directly with the
// worker's configuration, printed check by check. It exits 1 when the setup has gaps.
func runDoctor(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var asJSON bool
	cfg, err := readConfig("doctor", args, stderr, false, false, true, false, func(fs *flag.FlagSet, _ *Config) {
		fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	})
	if err != nil {
		return err
	}
	s := newStack(cfg, newLogger(stderr, cfg.LogLevel))
	defer s.close()
	if err := s.connectDataverse(ctx); err != nil {
		return err
	}
	rep, err := s.preflight(ctx)
	s.metrics.PreflightChecks.WithLabelValues("demand", preflight.Outcome(rep, err)).Inc()
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "Integration user %s (business unit %s), base currency %s\n",
			termSafe(rep.Principal.UserID), termSafe(rep.Principal.BusinessUnitID), termSafe(orDash(rep.BaseCurrency)))
		if rep.Principal.UserID != "" {
			fmt.Fprintf(stdout, "Roles: %s\n", termSafe(principalRoles(rep.Principal)))
		}
		gaps := map[string]int{}
		for i, g := range rep.Gaps {
			gaps[g.Key] = i
		}
		for _, c := range rep.Checks {
			if c.OK {
				fmt.Fprintf(stdout, "ok   %s\n", termSafe(c.Key))
				continue
			}
			g := rep.Gaps[gaps[c.Key]]
			fmt.Fprintf(stdout, "GAP  %s\n     %s\n     Fix: %s\n", termSafe(c.Key), termSafe(g.Failure.Message), termSafe(g.Failure.Resolution))
		}
		// A gap no check lists (an application restricted from the API stops every check).
		for _, g := range rep.Gaps {
			if !listed(rep.Checks, g.Key) {
				fmt.Fprintf(stdout, "GAP  %s\n     %s\n     Fix: %s\n", termSafe(g.Key), termSafe(g.Failure.Message), termSafe(g.Failure.Resolution))
			}
		}
		for _, w := range rep.Warnings {
			fmt.Fprintf(stdout, "WARN %s\n", termSafe(w))
		}
		for _, sk := range rep.Skipped {
			fmt.Fprintf(stdout, "SKIP %s\n", termSafe(sk))
		}
		fmt.Fprintf(stdout, "%d checks, %d gaps\n", rep.Checked, len(rep.Gaps))
	}
	if !rep.OK() {
		return errSetupGaps(len(rep.Gaps))
	}
	return nil
}

// principalRoles says how the user holds its roles: its own, and each team's.
func principalRoles(p domain.Principal) string {
	if p.RolesUnknown {
		return "could not be read (the user needs prvReadRole and prvReadTeam)"
	}
	names := func(rs []domain.Role) string {
		if len(rs) == 0 {
			return "none"
		}
		out := make([]string, 0, len(rs))
		for _, r := range rs {
			n := strconv.Quote(r.Name)
			if r.Predefined {
				n += " (predefined)"
			}
			out = append(out, n)
		}
		return strings.Join(out, ", ")
	}
	parts := []string{"own " + names(p.Roles)}
	for _, t := range p.Teams {
		kind := map[int]string{domain.TeamOwner: "owner team", domain.TeamAccess: "access team", domain.TeamEntraGroup: "Entra ID group team",
			domain.TeamOfficeGroup: "Entra ID Office group team"}[t.Type]
		if t.Default {
			kind = "default team of the business unit"
		}
		if t.Type == domain.TeamAccess {
			parts = append(parts, fmt.Sprintf("%s %q", kind, t.Name))
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %q: %s", kind, t.Name, names(t.Roles)))
	}
	return strings.Join(parts, "; ")
}

func listed(checks []domain.PreflightCheck, key string) bool {
	for _, c := range checks {
		if c.Key == key {
			return true
		}
	}
	return false
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
