// Package nats holds the NATS server configuration dvsync is deployed with (see the README).
// Go code embeds its accounts, so that `dvsync dev` grants exactly what a deployment does.
package nats

import _ "embed"

// Accounts is accounts.conf: the DVSYNC and PUBLISHERS accounts, their users and permissions.
// It reads the passwords from the variables DVSYNC_NATS_PASSWORD and PUBLISHER_NATS_PASSWORD.
//
//go:embed accounts.conf
var Accounts string
