package replay

import (
	"context"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dvsync/dvsync/consumers/syncworker"
)

// HeaderResentBy names who sent a record's newest change again from the changes stream (a
// person's "Sync now" of a record whose change the ledger does not keep).
const HeaderResentBy = "Dvsync-Resent-By"

// Resend publishes a change read back from the changes stream again, as a replay publishes a
// change the ledger keeps: without JetStream's and earlier replays' headers, marked as a person's
// retry (a skipped record is sent), under msgID.
func Resend(ctx context.Context, js jetstream.JetStream, subject string, headers map[string][]string, data []byte, actor, msgID string) error {
	msg := &nats.Msg{Subject: subject, Data: data, Header: replayHeaders(headers)}
	msg.Header.Del(HeaderResentBy)
	msg.Header.Set(syncworker.RetryHeader, "true")
	msg.Header.Set(HeaderResentBy, actor)
	_, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(msgID))
	return err
}
