package natsjs

import (
	"crypto/rand"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	deploynats "github.com/dvsync/dvsync/deployments/nats"
)

// The users of deployments/nats/accounts.conf: dvsync's processes, and upstream publishers, who
// may publish change events and nothing else.
const (
	DvsyncUser    = "dvsync"
	PublisherUser = "publisher"
)

// Passwords are the passwords of DvsyncUser and PublisherUser.
type Passwords struct {
	Dvsync, Publisher string
}

// NewPasswords returns random passwords (base32: no quoting in a URL or a shell).
func NewPasswords() Passwords {
	return Passwords{Dvsync: rand.Text(), Publisher: rand.Text()}
}

// UserURL is clientURL (a server's nats://host:port) with user and password, as nats.go and the
// nats CLI take them.
func UserURL(clientURL, user, password string) string {
	u, err := url.Parse(clientURL)
	if err != nil {
		return clientURL
	}
	u.User = url.UserPassword(user, password)
	return u.String()
}

// StartEmbedded starts an in-process NATS server with JetStream storing in storeDir, open to
// anyone who connects (tests use it). Port -1 picks a free port. The caller shuts it down with
// Shutdown and WaitForShutdown.
func StartEmbedded(host string, port int, storeDir string) (*server.Server, error) {
	return startEmbedded(&server.Options{}, host, port, storeDir)
}

// StartEmbeddedWithAccounts is StartEmbedded with the accounts a deployment has
// (deployments/nats/accounts.conf): DvsyncUser and PublisherUser with pw, and nobody else.
func StartEmbeddedWithAccounts(host string, port int, storeDir string, pw Passwords) (*server.Server, error) {
	opts := &server.Options{}
	// The file reads its passwords from variables, which a variable set in the text itself
	// provides: no environment variable is needed.
	vars := "DVSYNC_NATS_PASSWORD: " + strconv.Quote(pw.Dvsync) + "\nPUBLISHER_NATS_PASSWORD: " + strconv.Quote(pw.Publisher) + "\n"
	if err := opts.ProcessConfigString(vars + deploynats.Accounts); err != nil {
		return nil, fmt.Errorf("natsjs: embedded server accounts: %w", err)
	}
	return startEmbedded(opts, host, port, storeDir)
}

func startEmbedded(opts *server.Options, host string, port int, storeDir string) (*server.Server, error) {
	opts.ServerName = "dvsync-embedded"
	opts.Host, opts.Port = host, port
	opts.JetStream, opts.StoreDir = true, storeDir
	opts.NoSigs = true // the process handles its own signals
	opts.NoLog = true
	opts.MaxPayload = 8 << 20
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsjs: embedded server: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("natsjs: embedded server on %s:%d did not start", host, port)
	}
	return s, nil
}
