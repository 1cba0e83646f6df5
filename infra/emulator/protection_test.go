package emulator_test

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dvsync/dvsync/infra/emulator"
)

func TestRequestLimitAnswers429WithRetryAfter(t *testing.T) {
	a := newAPI(t)
	a.emu.SetLimits(emulator.Limits{Requests: 3, Window: time.Minute})
	for i := 0; i < 3; i++ {
		if resp, _ := a.do("GET", "accounts", ""); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i+1, resp.StatusCode)
		}
	}
	resp, out := a.do("GET", "accounts", "")
	e, _ := out["error"].(map[string]any)
	if resp.StatusCode != 429 || e["code"] != "0x80072322" || e["message"] != "Number of requests exceeded the limit of 3 over time window of 60 seconds." {
		t.Fatalf("4th request: %d %v", resp.StatusCode, out)
	}
	if ra := resp.Header.Get("Retry-After"); ra == "" || ra == "0" {
		t.Fatalf("Retry-After = %q", ra)
	}
}

func TestExecutionTimeAndConcurrencyLimits(t *testing.T) {
	a := newAPI(t)
	a.emu.SetLimits(emulator.Limits{ExecutionTime: 50 * time.Millisecond, Window: time.Minute})
	a.emu.SetLatency(emulator.Latency{PerRequest: 60 * time.Millisecond})
	a.do("GET", "accounts", "")
	resp, out := a.do("GET", "accounts", "")
	if e, _ := out["error"].(map[string]any); resp.StatusCode != 429 || e["code"] != "0x80072321" ||
		!strings.Contains(e["message"].(string), "exceeded limit of 50 milliseconds over time window of 60 seconds") {
		t.Fatalf("after spending the execution time: %d %v", resp.StatusCode, out)
	}

	b := newAPI(t)
	b.emu.SetLimits(emulator.Limits{Concurrent: 2})
	b.emu.SetLatency(emulator.Latency{PerRequest: 300 * time.Millisecond})
	var wg sync.WaitGroup
	codes := make(chan string, 6)
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, out := b.do("GET", "accounts", "")
			if resp.StatusCode == 429 {
				codes <- out["error"].(map[string]any)["code"].(string)
			}
		}()
	}
	wg.Wait()
	close(codes)
	n := 0
	for c := range codes {
		n++
		if c != "0x80072326" {
			t.Errorf("code %s, want 0x80072326", c)
		}
	}
	if n == 0 {
		t.Fatal("six concurrent requests against a limit of two were all admitted")
	}
}

func TestDOPHintOnEveryResponse(t *testing.T) {
	a := newAPI(t)
	a.emu.SetLimits(emulator.Limits{DOPHint: 7})
	if resp, _ := a.do("GET", "accounts", ""); resp.Header.Get("x-ms-dop-hint") != "7" {
		t.Fatalf("x-ms-dop-hint = %q", resp.Header.Get("x-ms-dop-hint"))
	}
}

func TestInjectedFaults(t *testing.T) {
	a := newAPI(t)
	get := func() (*http.Response, string, error) {
		req, _ := http.NewRequest("GET", a.srv.URL+"/api/data/v9.2/accounts", nil)
		resp, err := a.c.Do(req)
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b), nil
	}
	if err := a.emu.InjectFault(emulator.Fault{Kind: "status", Status: 502, Count: 1}); err != nil {
		t.Fatal(err)
	}
	if resp, body, _ := get(); resp.StatusCode != 502 || !strings.Contains(body, "invalid response while acting as a gateway") {
		t.Fatalf("502 fault: %d %s", resp.StatusCode, body)
	}
	if resp, _, _ := get(); resp.StatusCode != 200 {
		t.Fatalf("a count-1 fault hit twice: %d", resp.StatusCode)
	}
	// A POST: Go's transport would retry an idempotent GET on a dropped reused connection.
	_ = a.emu.InjectFault(emulator.Fault{Kind: "drop", Count: 1})
	if _, err := a.c.Post(a.srv.URL+"/api/data/v9.2/accounts", "application/json", strings.NewReader(`{"name":"x"}`)); err == nil || !errors.Is(err, io.EOF) {
		t.Fatalf("a dropped connection gave %v, want EOF", err)
	}
	_ = a.emu.InjectFault(emulator.Fault{Kind: "outage", For: time.Hour})
	for i := 0; i < 3; i++ {
		if resp, body, _ := get(); resp.StatusCode != 503 || !strings.Contains(body, "The service is unavailable") {
			t.Fatalf("outage: %d %s", resp.StatusCode, body)
		}
	}
	a.emu.ClearFaults()
	_ = a.emu.InjectFault(emulator.Fault{Kind: "slow", Delay: 2 * time.Second, Count: 1})
	short := &http.Client{Transport: a.c.Transport, Timeout: 200 * time.Millisecond}
	if _, err := short.Get(a.srv.URL + "/api/data/v9.2/accounts"); err == nil {
		t.Fatal("a slow response did not pass the client's timeout")
	}
	if err := a.emu.InjectFault(emulator.Fault{Kind: "nonsense"}); err == nil {
		t.Fatal("an unknown fault kind was accepted")
	}
}

func TestAdminControlsLimitsLatencyAndFaults(t *testing.T) {
	a := newAPI(t)
	post := func(path, body string) int {
		resp, err := http.Post(a.srv.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for path, body := range map[string]string{
		"/_emulator/limits":  `{"window":"1m","requests":100,"executionTime":"2m","concurrent":10,"dopHint":3}`,
		"/_emulator/latency": `{"perRequest":"1ms","perRecord":"1ms"}`,
		"/_emulator/faults":  `{"kind":"status","status":503,"count":1}`,
	} {
		if code := post(path, body); code != 204 {
			t.Fatalf("POST %s: %d", path, code)
		}
	}
	if resp, _ := a.do("GET", "accounts", ""); resp.StatusCode != 503 {
		t.Fatalf("after injecting a 503: %d", resp.StatusCode)
	}
	if resp, _ := a.do("GET", "accounts", ""); resp.Header.Get("x-ms-dop-hint") != "3" {
		t.Fatalf("dop hint = %q", resp.Header.Get("x-ms-dop-hint"))
	}
	if code := post("/_emulator/latency", `{"perRequest":5}`); code != 400 {
		t.Fatalf("a duration that is not a string: %d, want 400", code)
	}
}
