package postgres

import "time"

// SetClaimTTL shortens the claims' lease of a store that has made no coupling call yet.
func SetClaimTTL(s *Store, d time.Duration) { s.claimTTL = d }
