// Package testbed runs dvsync as a user would, for the commands that measure it from outside
// (the fault suite, the benchmark): the binaries built from this checkout, child processes in
// their own process groups with their output in log files, nats-server configured as
// deployments/nats is, a private PostgreSQL cluster, the `dvsync emulator` process and its admin
// API, and change events published until JetStream acknowledges them.
package testbed
