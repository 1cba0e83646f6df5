// Package telemetry defines dvsync's Prometheus metrics in one place. Labels are of low
// cardinality: table, class, kind, outcome, method, status, code, and user (an application
// user's client id, one per configured app registration, never a secret); never a record key.
package telemetry

import (
	"regexp"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/dvsync/dvsync/domain"
)

// Metrics are the collectors every dvsync process registers.
type Metrics struct {
	Registry          *prometheus.Registry
	EventsHandled     *prometheus.CounterVec   // table, outcome
	HandleDuration    *prometheus.HistogramVec // table
	ChangeLatency     *prometheus.HistogramVec // table
	SyncErrors        *prometheus.CounterVec   // class, kind, table
	Unclassified      *prometheus.CounterVec   // table
	TransientRetries  *prometheus.CounterVec   // table, kind
	DataverseRequests *prometheus.CounterVec   // method, status
	DataverseDuration *prometheus.HistogramVec // method
	ErrorsProjected   *prometheus.CounterVec   // class, kind
	Replays           *prometheus.CounterVec   // trigger (person, dependency), outcome
	Overwrites        *prometheus.CounterVec   // table
	ErrorsUnstorable  *prometheus.CounterVec   // cause (data, retries)
	UserRequests      *prometheus.CounterVec   // user, status
	UserThrottled     *prometheus.CounterVec   // user, code
	TokenFailures     *prometheus.CounterVec   // user, reason (refused, unavailable)
	BatchCalls        prometheus.Histogram
	tables            map[string]bool
}

// New creates the metrics on a fresh registry with the Go and process collectors. knownTables
// bounds the table label: any other table is counted as "_unknown".
func New(knownTables []string) *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &Metrics{
		Registry: reg,
		EventsHandled: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dvsync_events_handled_total",
			Help: "Change events handled, by table and outcome (synced, stale, deleted, uncoupled, failed, skipped, invalid, retried)."},
			[]string{"table", "outcome"}),
		HandleDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "dvsync_event_handle_duration_seconds",
			Help: "Time from taking a change event to its ack or nak.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)},
			[]string{"table"}),
		ChangeLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "dvsync_change_latency_seconds",
			Help:    "Time from a change event's arrival in the stream to its outcome being durable (the row written, or the error published), by table.",
			Buckets: []float64{.005, .01, .025, .05, .075, .1, .15, .2, .3, .4, .5, .75, 1, 1.5, 2, 3, 5, 10, 30, 60, 300, 1800}},
			[]string{"table"}),
		SyncErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dvsync_sync_errors_total",
			Help: "Permanent sync failures published to the error topics, by class and kind."},
			[]string{"class", "kind", "table"}),
		Unclassified: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dvsync_unclassified_errors_total",
			Help: "Dataverse errors no classifier rule knew, reported as setup/unknown with Dataverse's message, by table: a rule is missing."},
			[]string{"table"}),
		TransientRetries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dvsync_transient_retries_total",
			Help: "Transient failures retried in process or by redelivery."}, []string{"table", "kind"}),
		DataverseRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dvsync_dataverse_requests_total",
			Help: "Dataverse Web API requests by method and HTTP status (0: no answer)."}, []string{"method", "status"}),
		DataverseDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "dvsync_dataverse_request_duration_seconds",
			Help: "Dataverse Web API request duration.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}, []string{"method"}),
		ErrorsProjected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dvsync_errors_projected_total",
			Help: "Error events stored in the errors ledger by the projector."}, []string{"class", "kind"}),
		Replays: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dvsync_replays_total",
			Help: "Replays of stored errors, by trigger (person, dependency) and outcome."}, []string{"trigger", "outcome"}),
		Overwrites: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dvsync_overwrites_total",
			Help: "Writes sent again on a row that had changed in Dataverse since dvsync's last write (one-way mappings: the source wins)."},
			[]string{"table"}),
		ErrorsUnstorable: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dvsync_errors_unstorable_total",
			Help: "Messages of the errors stream the projector could not store in full and kept as a minimal invalid_event row, by cause (data: PostgreSQL refused a value; retries: storing kept failing)."},
			[]string{"cause"}),
		UserRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dvsync_dataverse_user_requests_total",
			Help: "Dataverse Web API requests by application user (its client id) and HTTP status (0: no answer); a $batch is one, as Dataverse counts it."},
			[]string{"user", "status"}),
		UserThrottled: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dvsync_dataverse_user_throttled_total",
			Help: "429 answers by application user and service-protection code (0x80072322 requests, 0x80072321 execution time, 0x80072326 concurrency)."},
			[]string{"user", "code"}),
		TokenFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dvsync_dataverse_token_failures_total",
			Help: "Token requests to Microsoft Entra ID that failed, by application user and reason (refused: Entra ID said no, a wrong or expired secret most often; unavailable: no answer, a timeout or a 5xx)."},
			[]string{"user", "reason"}),
		BatchCalls: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "dvsync_dataverse_batch_calls",
			Help: "Sync calls carried by each request of the batched Dataverse port (1: sent alone).", Buckets: []float64{1, 2, 5, 10, 25, 50, 100, 250, 500, 1000}}),
		tables: map[string]bool{},
	}
	for _, t := range knownTables {
		m.tables[t] = true
		m.Overwrites.WithLabelValues(t)
		m.Unclassified.WithLabelValues(t)
	}
	reg.MustRegister(m.EventsHandled, m.HandleDuration, m.ChangeLatency, m.SyncErrors, m.Unclassified, m.TransientRetries, m.DataverseRequests,
		m.DataverseDuration, m.ErrorsProjected, m.Replays, m.Overwrites, m.ErrorsUnstorable, m.UserRequests, m.UserThrottled,
		m.TokenFailures, m.BatchCalls, buildInfo())
	// Counters start at zero for every label value known in advance: a series that appears only
	// with its first increment hides that increment from rate() and increase(), and so from alerts.
	for _, k := range KnownErrorKinds() {
		m.ErrorsProjected.WithLabelValues(string(domain.ClassOf(k)), string(k))
	}
	for _, cause := range []string{"data", "retries"} {
		m.ErrorsUnstorable.WithLabelValues(cause)
	}
	return m
}

// Version and Revision override what the Go toolchain recorded in the binary, for builds without
// it (-buildvcs=false, no .git in a container build): go build -ldflags
// "-X github.com/dvsync/dvsync/infra/telemetry.Revision=$(git rev-parse HEAD)".
var Version, Revision string

// buildInfo is dvsync_build_info: 1, with the version, VCS revision and Go version as labels.
func buildInfo() prometheus.Collector {
	version, revision, goVersion := "unknown", "unknown", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && s.Value != "" {
				revision = s.Value
			}
		}
	}
	if Version != "" {
		version = Version
	}
	if Revision != "" {
		revision = Revision
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "dvsync_build_info",
		Help:        "Always 1; its labels name the running build (version, VCS revision, Go version).",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": goVersion}})
	g.Set(1)
	return g
}

// KnownErrorKinds are the kinds of permanent failure dvsync reports (their class is
// domain.ClassOf): the open-error gauges and the projector's counter start at zero for each.
func KnownErrorKinds() []domain.Kind {
	return []domain.Kind{domain.KindDependencyNotCoupled, domain.KindDestinationDeleted, domain.KindSourceDeleted,
		domain.KindDuplicateRecord, domain.KindUpdateConflict, domain.KindInvalidData, domain.KindMissingPrivilege,
		domain.KindAuthentication, domain.KindUserDisabled, domain.KindSchemaMismatch, domain.KindOptionValueMissing,
		domain.KindMappingMissing, domain.KindInvalidEvent, domain.KindDataverseUnavailable, domain.KindUnknown,
		domain.KindCustomLogic, domain.KindStateConflict, domain.KindDeleteBlocked}
}

var labelValue = regexp.MustCompile(`^[a-z][a-z_]{0,39}$`)

// Label is a class or kind as a metric label: one that is not of dvsync's form (an event from
// elsewhere) is "_unknown", since Prometheus panics on invalid UTF-8 and every value is a series.
func Label(v string) string {
	if labelValue.MatchString(v) {
		return v
	}
	return "_unknown"
}

// throttleCodes are Dataverse's service-protection codes, the code label of
// dvsync_dataverse_user_throttled_total.
var throttleCodes = []string{"0x80072322", "0x80072321", "0x80072326"}

// Table returns the table label value for a table name from an event.
func (m *Metrics) Table(table string) string {
	if m.tables[table] {
		return table
	}
	return "_unknown"
}

// ObserveDataverse records one Dataverse request; it fits dataverse.WithRequestObserver.
func (m *Metrics) ObserveDataverse(method, _ string, status int, took time.Duration) {
	m.DataverseRequests.WithLabelValues(method, strconv.Itoa(status)).Inc()
	m.DataverseDuration.WithLabelValues(method).Observe(took.Seconds())
}

// ObserveDataverseUser records one request of an application user.
func (m *Metrics) ObserveDataverseUser(user string, status int) {
	m.UserRequests.WithLabelValues(user, strconv.Itoa(status)).Inc()
}

// WatchDataverseUser exports an application user's requests in flight, read when scraped, and
// starts its throttling counters and, for each of tokenFailureReasons, its token failure counter
// at zero.
func (m *Metrics) WatchDataverseUser(user string, inFlight func() int, tokenFailureReasons ...string) {
	for _, code := range throttleCodes {
		m.UserThrottled.WithLabelValues(user, code)
	}
	for _, reason := range tokenFailureReasons {
		m.TokenFailures.WithLabelValues(user, reason)
	}
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "dvsync_dataverse_user_requests_in_flight",
		Help: "Dataverse Web API requests in flight by application user.", ConstLabels: prometheus.Labels{"user": user}},
		func() float64 { return float64(inFlight()) }))
}

// WatchBatchSize exports the batched port's batch size in force, which execution-time throttling
// lowers, read when scraped.
func (m *Metrics) WatchBatchSize(size func() int) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "dvsync_dataverse_batch_size",
		Help: "Most sync calls one Dataverse $batch carries now (halved on execution-time throttling, grown back on success)."},
		func() float64 { return float64(size()) }))
}
