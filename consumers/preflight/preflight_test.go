package preflight_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/dvsync/dvsync/consumers/preflight"
	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/natsjs"
	"github.com/dvsync/dvsync/infra/telemetry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func jetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	srv, err := natsjs.StartEmbedded("127.0.0.1", -1, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := natsjs.Ensure(context.Background(), js, natsjs.DefaultTopology()); err != nil {
		t.Fatal(err)
	}
	return js
}

// messages are the errors stream's messages by subject.
func messages(t *testing.T, js jetstream.JetStream) map[string][][]byte {
	t.Helper()
	ctx := context.Background()
	st, err := js.Stream(ctx, natsjs.ErrorsStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][][]byte{}
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		out[m.Subject] = append(out[m.Subject], m.Data)
	}
	return out
}

// The check at start publishes each gap, then an outcome naming the keys it checked; it is counted
// by when and outcome.
func TestStartPublishesTheGapsThenTheKeysItChecked(t *testing.T) {
	js := jetStream(t)
	ms := domain.DefaultMappings()
	metrics := telemetry.New(nil)
	rep := domain.Preflight(ms, domain.PreflightInput{Principal: domain.Principal{UserID: "u1"}, Privileges: map[string]bool{}, Entities: map[string]domain.EntityInfo{}})
	ck := &preflight.Checker{Check: func(context.Context) (domain.PreflightReport, error) { return rep, nil },
		Outcomes: natsjs.Publisher{JS: js}, Metrics: metrics, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ck.Start(context.Background())
	got := messages(t, js)
	outcomes := got[natsjs.ResolvedSubject(domain.PreflightTable)]
	if len(outcomes) != 1 || len(got[natsjs.ErrorSubject(domain.ClassSetup, domain.PreflightTable)]) != len(rep.Gaps) || len(rep.Gaps) == 0 {
		t.Fatalf("published %v", got)
	}
	var c domain.PreflightChecked
	if err := json.Unmarshal(outcomes[0], &c); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(c.Keys, domain.ApplicationKey) || !slices.Contains(c.Keys, "account") || len(c.Gaps) != len(rep.Gaps) {
		t.Fatalf("outcome %+v", c)
	}
	if n := testutil.ToFloat64(metrics.PreflightChecks.WithLabelValues("start", "gaps")); n != 1 {
		t.Fatalf("start/gaps counted %v times", n)
	}
}

// A Dataverse that does not answer holds up the start no longer than the start timeout; the
// check publishes nothing (it resolves nothing it did not see) and counts as failed.
func TestASlowCheckAtStartIsGivenUpAfterTheStartTimeout(t *testing.T) {
	js := jetStream(t)
	metrics := telemetry.New(nil)
	ck := &preflight.Checker{Check: func(ctx context.Context) (domain.PreflightReport, error) {
		<-ctx.Done() // Dataverse never answers
		return domain.PreflightReport{}, ctx.Err()
	}, Outcomes: natsjs.Publisher{JS: js}, StartTimeout: 200 * time.Millisecond, Metrics: metrics,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	begun := time.Now()
	ck.Start(context.Background())
	if took := time.Since(begun); took > 5*time.Second {
		t.Fatalf("the start check held up the worker for %s", took)
	}
	if got := messages(t, js); len(got) != 0 {
		t.Fatalf("a check that did not run published %v", got)
	}
	if n := testutil.ToFloat64(metrics.PreflightChecks.WithLabelValues("start", "failed")); n != 1 {
		t.Fatalf("start/failed counted %v times", n)
	}
}

// Every 0 never checks periodically: Run returns at once.
func TestNoPeriodicCheckWhenEveryIsZero(t *testing.T) {
	called := false
	ck := &preflight.Checker{Check: func(context.Context) (domain.PreflightReport, error) {
		called = true
		return domain.PreflightReport{}, nil
	},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := ck.Run(context.Background()); err != nil || called {
		t.Fatalf("Run with Every 0: %v, checked %v", err, called)
	}
}

func TestOutcome(t *testing.T) {
	for _, c := range []struct {
		rep  domain.PreflightReport
		err  error
		want string
	}{
		{domain.PreflightReport{}, nil, "ok"},
		{domain.PreflightReport{Skipped: []string{"coupled currencies"}}, nil, "skipped"},
		{domain.AppRestrictedReport(nil), nil, "gaps"},
		{domain.PreflightReport{}, context.DeadlineExceeded, "failed"},
	} {
		if got := preflight.Outcome(c.rep, c.err); got != c.want {
			t.Errorf("Outcome(%+v, %v) = %s, want %s", c.rep, c.err, got, c.want)
		}
	}
}
