package dataverse

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// A token in its last minutes is handed out at once while its successor is fetched; the caller
// does not wait for a token endpoint that hangs.
func TestATokenAboutToExpireIsUsedWhileItsSuccessorIsFetched(t *testing.T) {
	var fetches atomic.Int32
	release := make(chan struct{})
	s := &CachedTokenSource{base: context.Background(), timeout: time.Minute, fetch: func(ctx context.Context) (*oauth2.Token, error) {
		fetches.Add(1)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return &oauth2.Token{AccessToken: "new", Expiry: time.Now().Add(time.Hour)}, nil
	}}
	s.tok = &oauth2.Token{AccessToken: "old", Expiry: time.Now().Add(3 * time.Minute)}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for i := 0; i < 3; i++ {
		tok, err := s.TokenContext(ctx)
		if err != nil || tok.AccessToken != "old" {
			t.Fatalf("token %v, %v: want the old one, at once", tok, err)
		}
	}
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for tok, _ := s.TokenContext(ctx); tok.AccessToken != "new"; tok, _ = s.TokenContext(ctx) {
		if time.Now().After(deadline) {
			t.Fatal("the new token never replaced the old one")
		}
		time.Sleep(time.Millisecond)
	}
	if n := fetches.Load(); n != 1 {
		t.Fatalf("%d fetches, want one shared by every caller", n)
	}
}
