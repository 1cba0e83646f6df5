package main

import (
	"testing"
	"time"
)

func TestParseMetricsAddsUpMatchingSamples(t *testing.T) {
	body := []byte(`# HELP dvsync_dataverse_requests_total Dataverse Web API requests by method and HTTP status (0: no answer).
# TYPE dvsync_dataverse_requests_total counter
dvsync_dataverse_requests_total{method="PATCH",status="204"} 4990
dvsync_dataverse_requests_total{method="PATCH",status="429"} 7
dvsync_dataverse_requests_total{method="POST",status="429"} 3
dvsync_dataverse_request_duration_seconds_sum{method="PATCH"} 12.5
dvsync_dataverse_request_duration_seconds_sum{method="POST"} 0.25
dvsync_events_handled_total{outcome="synced",table="cust\"omer"} 5000
go_goroutines 42
`)
	ss, err := ParseMetrics(body)
	if err != nil {
		t.Fatal(err)
	}
	if got := ss.sum("dvsync_dataverse_requests_total", "status", "429"); got != 10 {
		t.Errorf("429s = %v, want 10", got)
	}
	if got := ss.sum("dvsync_dataverse_request_duration_seconds_sum"); got != 12.75 {
		t.Errorf("duration sum = %v, want 12.75", got)
	}
	if got := ss.sum("dvsync_events_handled_total", "outcome", "synced", "table", `cust"omer`); got != 5000 {
		t.Errorf("synced = %v, want 5000 (escaped label value)", got)
	}
	if got := ss.sum("go_goroutines"); got != 42 {
		t.Errorf("unlabelled sample = %v, want 42", got)
	}
	for _, bad := range []string{`x{a="1" 3`, `x{a=1} 3`, `x{a="1"}`, `x notanumber`} {
		if _, err := ParseMetrics([]byte(bad)); err == nil {
			t.Errorf("ParseMetrics(%q) gave no error", bad)
		}
	}
}

func TestVmHWMReadsThePeakInBytes(t *testing.T) {
	status := []byte("Name:\tdvsync\nVmPeak:\t 1300000 kB\nVmHWM:\t   35840 kB\nVmRSS:\t   30000 kB\n")
	got, err := vmHWM(status)
	if err != nil || got != 35840<<10 {
		t.Fatalf("vmHWM = %d, %v; want %d", got, err, 35840<<10)
	}
	if _, err := vmHWM([]byte("Name:\tdvsync\n")); err == nil {
		t.Error("a status without VmHWM gave no error")
	}
	if _, err := vmHWM([]byte("VmHWM:\t 12 MB\n")); err == nil {
		t.Error("a VmHWM not in kB gave no error")
	}
}

func TestPercentileIsNearestRank(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 200; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	if p := percentile(d, 0.50); p != 100*time.Millisecond {
		t.Errorf("p50 = %s, want 100ms", p)
	}
	if p := percentile(d, 0.99); p != 198*time.Millisecond {
		t.Errorf("p99 = %s, want 198ms", p)
	}
	if p := percentile(d[:1], 0.99); p != time.Millisecond {
		t.Errorf("p99 of one = %s", p)
	}
	if p := percentile(nil, 0.5); p != 0 {
		t.Errorf("p50 of none = %s", p)
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}, {nil, 0}} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestQuantileOfAHistogramIsTheBoundOfItsBucket(t *testing.T) {
	body := []byte(`dvsync_change_latency_seconds_bucket{table="customer",le="0.05"} 40
dvsync_change_latency_seconds_bucket{table="customer",le="0.1"} 90
dvsync_change_latency_seconds_bucket{table="customer",le="1"} 99
dvsync_change_latency_seconds_bucket{table="customer",le="+Inf"} 100
dvsync_change_latency_seconds_bucket{table="currency",le="0.05"} 0
dvsync_change_latency_seconds_bucket{table="currency",le="0.1"} 0
dvsync_change_latency_seconds_bucket{table="currency",le="1"} 0
dvsync_change_latency_seconds_bucket{table="currency",le="+Inf"} 0
`)
	ss, err := ParseMetrics(body)
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := ss.quantile("dvsync_change_latency_seconds", 0.5); !ok || p != 100*time.Millisecond {
		t.Errorf("p50 = %s, %v; want 100ms", p, ok)
	}
	if p, ok := ss.quantile("dvsync_change_latency_seconds", 0.99); !ok || p != time.Second {
		t.Errorf("p99 = %s, %v; want 1s", p, ok)
	}
	if _, ok := ss.quantile("dvsync_missing_seconds", 0.99); ok {
		t.Error("a missing histogram has a quantile")
	}
}
