package replay_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
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
	"github.com/dvsync/dvsync/infra/storage"
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

// storeError stores an error as the projector does once it has read its change back from the
// changes stream, with the given headers.
func storeError(t *testing.T, s *postgres.Store, key string, version int64, headers map[string][]string) int64 {
	t.Helper()
	return storeFailure(t, s, key, version, domain.MappingMissing("currency"), headers)
}

func storeFailure(t *testing.T, s *postgres.Store, key string, version int64, f *domain.Failure, headers map[string][]string) int64 {
	t.Helper()
	if headers == nil {
		headers = map[string][]string{"Nats-Msg-Id": {"old-id"}, "Dvsync-Correlation-Id": {"c-1"}}
	}
	ev := domain.ErrorEvent{ID: uuid.NewString(), OccurredAt: time.Now().UTC(), Table: "currency", Key: key, EventVersion: &version,
		Failure: *f, Event: []byte(`{"original":true}`), Stage: "sync", EventHeaders: headers,
		Delivery: domain.Delivery{Subject: "dvsync.changes.currency"}}
	if err := s.RecordErrorChecked(context.Background(), ev, ""); err != nil {
		t.Fatal(err)
	}
	list, _ := s.ListErrors(context.Background(), storage.ErrorFilter{Table: "currency", Key: key})
	return list[0].ID
}

func TestReplayPublishesTheStoredChangeWithItsHeaders(t *testing.T) {
	r, s, js := setup(t)
	key := "R" + uuid.NewString()[:8]
	id := storeError(t, s, key, 3, nil)
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
	if d.Status != storage.ErrorReplayed || len(d.ReplayLog) != 1 {
		t.Fatalf("after the replay: %+v", d)
	}
}

// A change older than what synced since is not sent: the replay says so and resolves the error.
func TestStaleReplayIsReportedNotSent(t *testing.T) {
	r, s, js := setup(t)
	key := "S" + uuid.NewString()[:8]
	id := storeError(t, s, key, 2, nil)
	if err := s.UpdateCoupling(context.Background(), "currency", key, func(_ context.Context, c domain.Coupling, _ domain.RecordLock) (domain.Coupling, error) {
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
	if d, _ := s.GetError(context.Background(), id); d.Status != storage.ErrorResolved {
		t.Fatalf("the error after a stale replay: %s", d.Status)
	}
	if res := r.Replay(context.Background(), []int64{999999999}, "otto")[0]; res.Outcome != replay.NotFound {
		t.Fatalf("replay of a missing error: %+v", res)
	}
}

// Many replays of one error at once publish it once: the claim is atomic, and holds until the
// replay is handled (or replayGrace has passed), not only until it is published.
func TestConcurrentReplaysPublishOnce(t *testing.T) {
	r, s, js := setup(t)
	key := "K" + uuid.NewString()[:8]
	id := storeError(t, s, key, 1, nil)
	const n = 16
	outcomes := make(chan replay.Outcome, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			outcomes <- r.Replay(context.Background(), []int64{id}, "otto")[0].Outcome
		}()
	}
	close(start)
	wg.Wait()
	close(outcomes)
	count := map[replay.Outcome]int{}
	for o := range outcomes {
		count[o]++
	}
	if count[replay.Published] != 1 || count[replay.AlreadyReplaying] != n-1 {
		t.Fatalf("%d replays at once: %v; want one published, the others already replaying", n, count)
	}
	stream, _ := js.Stream(context.Background(), natsjs.ChangesStream)
	info, _ := stream.Info(context.Background())
	if info.State.Msgs != 1 {
		t.Fatalf("%d messages published, want 1", info.State.Msgs)
	}
}

// A replay is a new message: the stored change's JetStream headers (Nats-Msg-Id, any
// Nats-Expected-* that would refuse it for ever) and an earlier replay's headers are not sent.
func TestReplayDropsJetStreamAndEarlierReplayHeaders(t *testing.T) {
	r, s, js := setup(t)
	key := "H" + uuid.NewString()[:8]
	id := storeError(t, s, key, 1, map[string][]string{
		"Nats-Msg-Id": {"old"}, "Nats-Expected-Stream": {"ANOTHER"}, "Nats-Expected-Last-Sequence": {"1"},
		"Dvsync-Replay-Of": {"7"}, "Dvsync-Replayed-By": {"someone"}, "Dvsync-Correlation-Id": {"c-9"}})
	res := r.Replay(context.Background(), []int64{id}, "otto")[0]
	if res.Outcome != replay.Published {
		t.Fatalf("replay: %+v", res)
	}
	stream, _ := js.Stream(context.Background(), natsjs.ChangesStream)
	msg, err := stream.GetLastMsgForSubject(context.Background(), "dvsync.changes.currency")
	if err != nil {
		t.Fatal(err)
	}
	for k := range msg.Header {
		if strings.HasPrefix(k, "Nats-Expected") {
			t.Errorf("replayed with %s", k)
		}
	}
	if msg.Header.Get("Dvsync-Replay-Of") != fmt.Sprint(id) || msg.Header.Get("Dvsync-Replayed-By") != "otto" ||
		msg.Header.Get("Dvsync-Correlation-Id") != "c-9" || len(msg.Header.Values("Dvsync-Replay-Of")) != 1 {
		t.Fatalf("replayed with headers %v", msg.Header)
	}
}

// Errors that cannot be replayed say why: an invalid event (the publisher must send a corrected
// one), and an error whose change was not read back from the changes stream.
func TestNotReplayableErrorsSayWhy(t *testing.T) {
	r, s, js := setup(t)
	invalid := storeFailure(t, s, "I"+uuid.NewString()[:8], 1, domain.InvalidEvent("data.fields is missing"), nil)
	key := "U" + uuid.NewString()[:8]
	v := int64(1)
	if err := s.RecordError(context.Background(), domain.ErrorEvent{ID: uuid.NewString(), OccurredAt: time.Now().UTC(), Table: "currency",
		Key: key, EventVersion: &v, Failure: *domain.MappingMissing("currency"), Event: []byte(`{"forged":true}`), Stage: "sync"}); err != nil {
		t.Fatal(err)
	}
	list, _ := s.ListErrors(context.Background(), storage.ErrorFilter{Table: "currency", Key: key})
	unchecked := list[0].ID
	for id, want := range map[int64]string{invalid: "corrected event", unchecked: storage.NotReadBack} {
		res := r.Replay(context.Background(), []int64{id}, "otto")[0]
		if res.Outcome != replay.NotReplayable || !strings.Contains(res.Detail, want) {
			t.Errorf("replay of %d: %+v; want not_replayable saying %q", id, res, want)
		}
	}
	stream, _ := js.Stream(context.Background(), natsjs.ChangesStream)
	if info, _ := stream.Info(context.Background()); info.State.Msgs != 0 {
		t.Fatalf("%d messages published, want none", info.State.Msgs)
	}
}
