package telemetry_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/storage"
	"github.com/dvsync/dvsync/infra/telemetry"
)

// gather returns every sample of the registry as name{label="value",...} → value.
func gather(t *testing.T, m *telemetry.Metrics) map[string]float64 {
	t.Helper()
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, s := range f.GetMetric() {
			var labels []string
			for _, l := range s.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			sort.Strings(labels)
			v := s.GetGauge().GetValue() + s.GetCounter().GetValue()
			out[f.GetName()+"{"+strings.Join(labels, ",")+"}"] = v
		}
	}
	return out
}

func TestConsumerBacklogIsReadAtMostEveryRefresh(t *testing.T) {
	m := telemetry.New(nil)
	var reads atomic.Int32
	oldest := time.Now().Add(-90 * time.Second)
	m.WatchConsumer("S", "c", telemetry.Refresh{Every: time.Hour, Timeout: time.Second}, func(context.Context) (telemetry.ConsumerBacklog, error) {
		reads.Add(1)
		return telemetry.ConsumerBacklog{Pending: 7, AckPending: 2, Redelivered: 1, Oldest: oldest}, nil
	})
	var got map[string]float64
	for i := 0; i < 3; i++ {
		got = gather(t, m)
	}
	if n := reads.Load(); n != 1 {
		t.Fatalf("%d reads for three scrapes within the refresh, want 1", n)
	}
	const l = `{consumer="c",stream="S"}`
	age := got["dvsync_nats_consumer_oldest_pending_age_seconds"+l]
	if got["dvsync_nats_consumer_pending_messages"+l] != 7 || got["dvsync_nats_consumer_ack_pending_messages"+l] != 2 ||
		got["dvsync_nats_consumer_redelivered_messages"+l] != 1 || got["dvsync_nats_consumer_info_up"+l] != 1 ||
		got["dvsync_nats_consumer_info_errors_total"+l] != 0 || age < 90 || age > 120 {
		t.Fatalf("exported %v", got)
	}
}

// A read that does not answer ends with its timeout: the scrape returns, without the backlog,
// saying the read failed.
func TestAConsumerReadThatHangsEndsWithItsTimeout(t *testing.T) {
	m := telemetry.New(nil)
	var told atomic.Value
	m.WatchConsumer("S", "c", telemetry.Refresh{Every: 0, Timeout: 50 * time.Millisecond, OnError: func(err error) { told.Store(err) }},
		func(ctx context.Context) (telemetry.ConsumerBacklog, error) {
			<-ctx.Done()
			return telemetry.ConsumerBacklog{}, ctx.Err()
		})
	start := time.Now()
	gather(t, m)
	got := gather(t, m)
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("two scrapes took %s with a 50ms timeout", took)
	}
	const l = `{consumer="c",stream="S"}`
	if _, ok := got["dvsync_nats_consumer_pending_messages"+l]; ok {
		t.Error("a backlog was exported although its read failed")
	}
	if got["dvsync_nats_consumer_info_up"+l] != 0 || got["dvsync_nats_consumer_info_errors_total"+l] != 2 {
		t.Errorf("exported %v; want up 0 and two failed reads", got)
	}
	if err, _ := told.Load().(error); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("OnError was told %v", err)
	}
}

type ledger struct {
	counts storage.LedgerCounts
	err    error
}

func (l *ledger) CountLedger(context.Context) (storage.LedgerCounts, error) { return l.counts, l.err }

// The ledger's counts come out by class and kind, with every known kind, class and table at zero
// when it has none, and values from elsewhere bounded to "_unknown".
func TestLedgerCounts(t *testing.T) {
	m := telemetry.New(domain.KnownTables)
	now := time.Now()
	l := &ledger{counts: storage.LedgerCounts{
		Open: []storage.OpenErrors{
			{Class: domain.ClassCoupling, Kind: domain.KindDependencyNotCoupled, Count: 3, Oldest: now.Add(-time.Hour)},
			{Class: domain.ClassCoupling, Kind: domain.KindInvalidData, Count: 1, Oldest: now.Add(-time.Minute)},
			{Class: domain.ClassSetup, Kind: domain.KindMissingPrivilege, Count: 1, Oldest: now.Add(-10 * time.Minute)},
			{Class: "Not A Class", Kind: "bad\xff", Count: 2, Oldest: now.Add(-2 * time.Hour)},
		},
		Skipped: map[string]int{"customer": 2, "no such table": 1},
	}}
	m.WatchLedger(l, telemetry.Refresh{Every: 0, Timeout: time.Second})
	got := gather(t, m)
	near := func(series string, want float64) {
		t.Helper()
		if v, ok := got[series]; !ok || math.Abs(v-want) > 30 {
			t.Errorf("%s = %v (present: %v), want about %v", series, v, ok, want)
		}
	}
	for series, want := range map[string]float64{
		`dvsync_open_errors{class="coupling",kind="dependency_not_coupled"}`: 3,
		`dvsync_open_errors{class="coupling",kind="invalid_data"}`:           1,
		`dvsync_open_errors{class="setup",kind="missing_privilege"}`:         1,
		`dvsync_open_errors{class="setup",kind="dataverse_unavailable"}`:     0,
		`dvsync_open_errors{class="setup",kind="authentication"}`:            0,
		`dvsync_open_errors{class="_unknown",kind="_unknown"}`:               2,
		`dvsync_skipped_records{table="customer"}`:                           2,
		`dvsync_skipped_records{table="item"}`:                               0,
		`dvsync_skipped_records{table="_unknown"}`:                           1,
		`dvsync_ledger_stats_up{}`:                                           1,
	} {
		if v, ok := got[series]; !ok || v != want {
			t.Errorf("%s = %v (present: %v), want %v", series, v, ok, want)
		}
	}
	near(`dvsync_oldest_open_error_age_seconds{class="coupling"}`, 3600)
	near(`dvsync_oldest_open_error_age_seconds{class="setup"}`, 600)

	// Nothing open: the ages are 0, not absent; a failed count removes the counts.
	l.counts = storage.LedgerCounts{}
	got = gather(t, m)
	near(`dvsync_oldest_open_error_age_seconds{class="setup"}`, 0)
	if got[`dvsync_open_errors{class="coupling",kind="dependency_not_coupled"}`] != 0 {
		t.Errorf("open errors after they were resolved: %v", got)
	}
	l.err = errors.New("database down")
	got = gather(t, m)
	if _, ok := got[`dvsync_open_errors{class="setup",kind="authentication"}`]; ok || got[`dvsync_ledger_stats_up{}`] != 0 ||
		got[`dvsync_ledger_stats_errors_total{}`] != 1 {
		t.Errorf("after a failed count: %v", got)
	}
}

// Counters an alert takes the rate of start at zero for the label values known in advance.
func TestCountersStartAtZero(t *testing.T) {
	m := telemetry.New(domain.KnownTables)
	m.WatchDataverseUser("app-1", func() int { return 0 }, "refused", "unavailable")
	got := gather(t, m)
	for _, series := range []string{
		`dvsync_dataverse_token_failures_total{reason="refused",user="app-1"}`,
		`dvsync_dataverse_user_throttled_total{code="0x80072322",user="app-1"}`,
		`dvsync_errors_projected_total{class="setup",kind="missing_privilege"}`,
		`dvsync_errors_projected_total{class="coupling",kind="dependency_not_coupled"}`,
		`dvsync_errors_unstorable_total{cause="data"}`,
		`dvsync_overwrites_total{table="customer"}`,
	} {
		if v, ok := got[series]; !ok || v != 0 {
			t.Errorf("%s = %v (present: %v), want 0", series, v, ok)
		}
	}
	var build string
	for series, v := range got {
		if strings.HasPrefix(series, "dvsync_build_info{") && v == 1 {
			build = series
		}
	}
	if !strings.Contains(build, `goversion="go`) || !strings.Contains(build, `revision="`) || !strings.Contains(build, `version="`) {
		t.Errorf("build info = %q", build)
	}
}

// Two consumers watched on one registry, as `dvsync dev` does (its worker and its projector).
func TestTwoConsumersOnOneRegistry(t *testing.T) {
	m := telemetry.New(nil)
	for i, c := range []string{"a", "b"} {
		n := uint64(i + 1)
		m.WatchConsumer("S", c, telemetry.Refresh{Every: time.Hour, Timeout: time.Second}, func(context.Context) (telemetry.ConsumerBacklog, error) {
			return telemetry.ConsumerBacklog{Pending: n}, nil
		})
	}
	got := gather(t, m)
	if got[`dvsync_nats_consumer_pending_messages{consumer="a",stream="S"}`] != 1 || got[`dvsync_nats_consumer_pending_messages{consumer="b",stream="S"}`] != 2 {
		t.Fatalf("exported %v", got)
	}
}
