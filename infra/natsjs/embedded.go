package natsjs

import (
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// StartEmbedded starts an in-process NATS server with JetStream storing in storeDir. Port -1
// picks a free port. The caller shuts it down with Shutdown and WaitForShutdown.
func StartEmbedded(host string, port int, storeDir string) (*server.Server, error) {
	opts := &server.Options{
		ServerName: "dvsync-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   storeDir,
		NoSigs:     true, // the process handles its own signals
		NoLog:      true,
		MaxPayload: 8 << 20,
	}
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
