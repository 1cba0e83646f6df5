package sqlite

import (
	"context"
	"time"
)

// OpenWithClaimTTL opens a store whose record claims last claimTTL (0: storage.ClaimTTL).
func OpenWithClaimTTL(ctx context.Context, path string, claimTTL time.Duration) (*Store, error) {
	return open(ctx, path, claimTTL)
}
