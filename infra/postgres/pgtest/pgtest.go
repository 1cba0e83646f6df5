// Package pgtest gives each test package a fresh PostgreSQL database and drops it afterwards.
package pgtest

import (
	"context"
	"testing"

	"crypto/rand"
	"encoding/hex"
	"fmt"
	"go.uber.org/goleak"
	"net/url"
	"os"
	"strings"

	"github.com/jackc/pgx/v5"
)

// AdminURL is the server tests create databases on: DVSYNC_TEST_DATABASE_URL, or the local
// PostgreSQL with trust auth.
func AdminURL() string {
	if u := os.Getenv("DVSYNC_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// Database creates a database named after prefix and returns its URL and a function that drops it.
func Database(prefix string) (string, func(), error) {
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		return "", nil, fmt.Errorf("pgtest: connect to %s: %w", redact(AdminURL()), err)
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "dvsync_test_" + strings.ToLower(prefix) + "_" + hex.EncodeToString(b)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		admin.Close(ctx)
		return "", nil, fmt.Errorf("pgtest: create database: %w", err)
	}
	u, _ := url.Parse(AdminURL())
	u.Path = "/" + name
	drop := func() {
		_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
		admin.Close(ctx)
	}
	return u.String(), drop, nil
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// Main is a TestMain for a package that needs PostgreSQL: it creates the package's database,
// stores its URL in *url, runs the tests, drops the database and fails the run on leaked goroutines.
func Main(m *testing.M, prefix string, url *string) {
	u, drop, err := Database(prefix)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*url = u
	code := m.Run()
	drop()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
