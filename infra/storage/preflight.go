package storage

import (
	"fmt"

	"github.com/dvsync/dvsync/domain"
)

// PreflightGaps are a check's gap keys as the ledger keeps keys (Clean), never nil.
func PreflightGaps(c domain.PreflightChecked) []string {
	out := make([]string, 0, len(c.Gaps))
	for _, g := range c.Gaps {
		out = append(out, Clean(g, KeyMax))
	}
	return out
}

// PreflightKeys are the keys a check looked at, as the ledger keeps keys (Clean), never nil: only
// open errors among them may be resolved by it.
func PreflightKeys(c domain.PreflightChecked) []string {
	out := make([]string, 0, len(c.Keys))
	for _, k := range c.Keys {
		out = append(out, Clean(k, KeyMax))
	}
	return out
}

// PreflightResolved is the reason an error a check no longer finds is resolved with.
func PreflightResolved(c domain.PreflightChecked) string {
	return fmt.Sprintf("the preflight check of %s no longer finds it", c.At.UTC().Format("2006-01-02 15:04:05 MST"))
}
