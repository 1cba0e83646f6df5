package emulator_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/dvsync/dvsync/infra/emulator"
)

// The cost of a write must not grow with the rows a table holds: alternate keys and duplicate
// rules are indexed. Compare the ns/op of rows=1000 and rows=20000 of one run.

const benchParts = 100 // requests per $batch, as the batched sync path sends them

// benchEmulator serves an emulator whose accounts table holds rows accounts, each with an account
// number (an alternate key) and a name (a duplicate rule), without limits in the way.
func benchEmulator(b *testing.B, rows int) (*http.Client, string, []uuid.UUID) {
	b.Helper()
	emu := emulator.New()
	emu.SetLimits(emulator.Limits{Requests: 1 << 30, ExecutionTime: 1000 * time.Hour, Concurrent: 1 << 10})
	srv := httptest.NewServer(emu.Handler())
	b.Cleanup(srv.Close)
	cfg := clientcredentials.Config{ClientID: emulator.DefaultApp.ClientID, ClientSecret: emulator.DefaultApp.ClientSecret,
		TokenURL: srv.URL + "/" + emulator.DefaultTenant + "/oauth2/v2.0/token"}
	c := cfg.Client(context.Background())
	ids := make([]uuid.UUID, rows)
	for from := 0; from < rows; from += 1000 {
		var targets []string
		for i := from; i < min(from+1000, rows); i++ {
			ids[i] = uuid.NewSHA1(uuid.NameSpaceOID, fmt.Appendf(nil, "seed %d", i))
			targets = append(targets, fmt.Sprintf(`{"@odata.type":"Microsoft.Dynamics.CRM.account","accountid":"%s","accountnumber":"S%d","name":"Seeded %d"}`, ids[i], i, i))
		}
		resp, err := c.Post(srv.URL+"/api/data/v9.2/accounts/Microsoft.Dynamics.CRM.CreateMultiple", "application/json",
			strings.NewReader(`{"Targets":[`+strings.Join(targets, ",")+`]}`))
		if err != nil {
			b.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("seeding: %s", resp.Status)
		}
	}
	return c, srv.URL + "/api/data/v9.2/", ids
}

// batchWriter sends $batch requests (no change set, continue-on-error) of the batched sync
// path's parts: creates with If-None-Match, updates with If-Match, deletes and version reads,
// each write answering its ETag. The table's size stays constant: each batch deletes the rows the
// one before created.
type batchWriter struct {
	c       *http.Client
	base    string
	ids     []uuid.UUID
	created []uuid.UUID
	n       int
}

func newBatchWriter(b *testing.B, rows int) *batchWriter {
	c, base, ids := benchEmulator(b, rows)
	return &batchWriter{c: c, base: base, ids: ids}
}

func (bw *batchWriter) write(b *testing.B) {
	n := bw.n
	bw.n++
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	part := func(format string, args ...any) {
		p, _ := mw.CreatePart(map[string][]string{"Content-Type": {"application/http"}, "Content-Transfer-Encoding": {"binary"}})
		_, _ = io.WriteString(p, strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", "\r\n"))
	}
	write := "Prefer: return=representation\nMSCRM.SuppressDuplicateDetection: false\nContent-Type: application/json; type=entry\n"
	for _, id := range bw.created {
		part("DELETE /api/data/v9.2/accounts(%s) HTTP/1.1\nIf-Match: *\n\n", id)
	}
	bw.created = bw.created[:0]
	for i := range 10 {
		id := uuid.New()
		bw.created = append(bw.created, id)
		part("PATCH /api/data/v9.2/accounts(%s)?$select=accountid HTTP/1.1\nIf-None-Match: *\n%s\n{\"accountnumber\":\"C%d-%d\",\"name\":\"Created %d-%d\"}", id, write, n, i, n, i)
	}
	for i := range benchParts - 30 {
		id := bw.ids[(n*(benchParts-30)+i)%len(bw.ids)]
		part("PATCH /api/data/v9.2/accounts(%s)?$select=accountid HTTP/1.1\nIf-Match: *\n%s\n{\"accountnumber\":\"U%d-%d\",\"name\":\"Updated %d-%d\"}", id, write, n, i, n, i)
	}
	for i := range 10 {
		part("GET /api/data/v9.2/accounts(%s)?$select=accountid HTTP/1.1\n\n", bw.ids[(n*10+i)%len(bw.ids)])
	}
	_ = mw.Close()
	req, _ := http.NewRequest("POST", bw.base+"$batch", &body)
	req.Header.Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
	req.Header.Set("Prefer", "odata.continue-on-error")
	resp, err := bw.c.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 200 || bytes.Contains(answer, []byte("HTTP/1.1 4")) || bytes.Contains(answer, []byte("HTTP/1.1 5")) {
		b.Fatalf("batch %d: %s\n%s", n, resp.Status, answer)
	}
}

// BenchmarkBatchWrite times one $batch of benchParts requests against tables of two sizes.
func BenchmarkBatchWrite(b *testing.B) {
	for _, rows := range []int{1000, 20000} {
		b.Run(fmt.Sprintf("rows=%d", rows), func(b *testing.B) {
			bw := newBatchWriter(b, rows)
			for b.Loop() {
				bw.write(b)
			}
			b.ReportMetric(float64(bw.n*benchParts)/b.Elapsed().Seconds(), "parts/s")
		})
	}
}

// BenchmarkBatchWriteRatio alternates the batches of BenchmarkBatchWrite between a table of 1,000
// rows and one of 20,000, so that both see the same machine, and reports the ratio of their
// times: about 1 when a write's cost does not grow with the table.
func BenchmarkBatchWriteRatio(b *testing.B) {
	small, large := newBatchWriter(b, 1000), newBatchWriter(b, 20000)
	var tSmall, tLarge time.Duration
	for b.Loop() {
		start := time.Now()
		small.write(b)
		mid := time.Now()
		large.write(b)
		tSmall, tLarge = tSmall+mid.Sub(start), tLarge+time.Since(mid)
	}
	b.ReportMetric(float64(tSmall.Nanoseconds())/float64(small.n), "ns/batch@1000")
	b.ReportMetric(float64(tLarge.Nanoseconds())/float64(large.n), "ns/batch@20000")
	b.ReportMetric(tLarge.Seconds()/tSmall.Seconds(), "ratio")
}

// BenchmarkPatch updates one row per request, as the unbatched sync path does.
func BenchmarkPatch(b *testing.B) {
	for _, rows := range []int{1000, 20000} {
		b.Run(fmt.Sprintf("rows=%d", rows), func(b *testing.B) {
			c, base, ids := benchEmulator(b, rows)
			for n := 0; b.Loop(); n++ {
				req, _ := http.NewRequest("PATCH", fmt.Sprintf("%saccounts(%s)", base, ids[n%len(ids)]),
					strings.NewReader(fmt.Sprintf(`{"accountnumber":"P%d","name":"Patched %d"}`, n, n)))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("If-Match", "*")
				req.Header.Set("MSCRM.SuppressDuplicateDetection", "false")
				resp, err := c.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != 204 {
					b.Fatalf("patch %d: %s", n, resp.Status)
				}
			}
		})
	}
}

// lookup asks for the row of one seeded account by its number and name, as a match-based first
// sync does.
func lookup(b *testing.B, c *http.Client, base string, n, rows int) {
	i := n % rows
	filter := url.QueryEscape(fmt.Sprintf("accountnumber eq 'S%d' and name eq 'seeded %d'", i, i))
	resp, err := c.Get(base + "accounts?$select=accountid,name&$top=2&$filter=" + filter)
	if err != nil {
		b.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(raw, fmt.Appendf(nil, `"Seeded %d"`, i)) {
		b.Fatalf("lookup %d: %s %s", i, resp.Status, raw)
	}
}

// BenchmarkLookupRatio alternates lookups by match fields between a table of 1,000 rows and one
// of 20,000, and reports the ratio of their times: about 1 when a lookup is answered from the
// equality index rather than by scanning the table.
func BenchmarkLookupRatio(b *testing.B) {
	const small, large = 1000, 20000
	cs, bs, _ := benchEmulator(b, small)
	cl, bl, _ := benchEmulator(b, large)
	var tSmall, tLarge time.Duration
	n := 0
	for b.Loop() {
		start := time.Now()
		lookup(b, cs, bs, n, small)
		mid := time.Now()
		lookup(b, cl, bl, n, large)
		tSmall, tLarge = tSmall+mid.Sub(start), tLarge+time.Since(mid)
		n++
	}
	b.ReportMetric(float64(tSmall.Nanoseconds())/float64(n), "ns/lookup@1000")
	b.ReportMetric(float64(tLarge.Nanoseconds())/float64(n), "ns/lookup@20000")
	b.ReportMetric(tLarge.Seconds()/tSmall.Seconds(), "ratio")
}
