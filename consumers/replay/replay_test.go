package replay_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dvsync/dvsync/consumers/replay"
	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/natsjs"
	"github.com/dvsync/dvsync/infra/postgres"
	"github.com/dvsync/dvsync/infra/postgres/pgtest"
)

var dbURL string

func TestMain(m *testing.M) { pgtest.Main(m, "replay", &dbURL) }

func setup(t *testing.T) (*replay.Replayer, *postgres.Store, jetstream.JetStream) {
	srv, err := natsjs.StartEmbedded("127.0.0.1", -1, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	if err := natsjs.Ensure(context.Background(), js, natsjs.DefaultTopology()); err != nil {
		t.Fatal(err)
	}
	store, err := postgres.Open(context.Background(), dbURL, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close(); nc.Close(); srv.Shutdown(); srv.WaitForShutdown() })
	return &replay.Replayer{Store: store, JS: js, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, store, js
}

func storeError(t *testing.T, s *postgres.Store, key string, version int64) int64 {
	t.Helper()
	ev := domain.ErrorEvent{ID: uuid.NewString(), OccurredAt: time.Now().UTC(), Table: "currency", Key: key, EventVersion: &version,
		Failure: *domain.InvalidEvent("test"), Event: []byte(`{"original":true}`), Stage: "sync",
		EventHeaders: map[string][]string{"Nats-Msg-Id": {"old-id"}, "Dvsync-Correlation-Id": {"c-1"}},
		Delivery:     domain.Delivery{Subject: "dvsync.changes.currency"}}
	if err := s.RecordError(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	list, _ := s.ListErrors(context.Background(), postgres.ErrorFilter{Table: "currency", Key: key})
	return list[0].ID
}

func TestReplayPublishesTheStoredChangeWithItsHeaders(t *testing.T) {
	r, s, js := setup(t)
	key := "R" + uuid.NewString()[:8]
	id := storeError(t, s, key, 3)
	res := r.Replay(context.Background(), []int64{id}, "otto")[0]
	if res.Outcome != replay.Published || res.MessageID == "" {
		t.Fatalf("replay: %+v", res)
	}
	stream, _ := js.Stream(context.Background(), natsjs.ChangesStream)
	msg, err := stream.GetLastMsgForSubject(context.Background(), "dvsync.changes.currency")
	if err != nil {
		t.Fatal(err)
	}
	if string(msg.Data) != `{"original":true}` || msg.Header.Get("Dvsync-Retry") != "true" || msg.Header.Get(replay.HeaderReplayedBy) != "otto" ||
		msg.Header.Get("Dvsync-Correlation-Id") != "c-1" || msg.Header.Get("Nats-Msg-Id") != res.MessageID {
		t.Fatalf("published %q with headers %v", msg.Data, msg.Header)
	}
	d, _ := s.GetError(context.Background(), id)
	if d.Status != postgres.ErrorReplayed || len(d.ReplayLog) != 1 {
		t.Fatalf("after the replay: %+v", d)
	}
}

// A change older than what synced since is not sent: the replay says so and resolves the error.
func TestStaleReplayIsReportedNotSent(t *testing.T) {
	r, s, js := setup(t)
	key := "S" + uuid.NewString()[:8]
	id := storeError(t, s, key, 2)
	if err := s.UpdateCoupling(context.Background(), "currency", key, func(_ context.Context, c domain.Coupling) (domain.Coupling, error) {
		c.Version, c.Status, c.RowID = 5, domain.CouplingSynced, uuid.New()
		return c, nil
	}); err != nil {
		t.Fatal(err)
	}
	res := r.Replay(context.Background(), []int64{id}, "otto")[0]
	if res.Outcome != replay.Stale {
		t.Fatalf("replay: %+v", res)
	}
	stream, _ := js.Stream(context.Background(), natsjs.ChangesStream)
	if info, _ := stream.Info(context.Background()); info.State.Msgs != 0 {
		t.Fatalf("a stale change was published (%d messages)", info.State.Msgs)
	}
	if d, _ := s.GetError(context.Background(), id); d.Status != postgres.ErrorResolved {
		t.Fatalf("the error after a stale replay: %s", d.Status)
	}
	if res := r.Replay(context.Background(), []int64{999999999}, "otto")[0]; res.Outcome != replay.NotFound {
		t.Fatalf("replay of a missing error: %+v", res)
	}
}
