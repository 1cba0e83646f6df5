package emulator_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/dvsync/dvsync/infra/emulator"
)

// answer is one answer to a request, alone or as a part of a $batch.
type answer struct {
	status int
	header http.Header
	body   map[string]any
}

// postBatch posts a $batch and returns the answer and its body.
func (a *api) postBatch(body, ct string, prefer ...string) (*http.Response, []byte) {
	a.t.Helper()
	req, _ := http.NewRequest("POST", a.srv.URL+"/api/data/v9.2/$batch", strings.NewReader(body))
	req.Header.Set("Content-Type", ct)
	for _, p := range prefer {
		req.Header.Add("Prefer", p)
	}
	resp, err := a.c.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp, raw
}

// eachPart calls fn with every application/http part of a $batch answer, change sets flattened.
func eachPart(t *testing.T, resp *http.Response, body []byte, fn func(io.Reader)) {
	t.Helper()
	_, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	var walk func(r io.Reader, boundary string)
	walk = func(r io.Reader, boundary string) {
		mr := multipart.NewReader(r, boundary)
		for {
			p, err := mr.NextPart()
			if err != nil {
				return
			}
			if ct, cp, _ := mime.ParseMediaType(p.Header.Get("Content-Type")); ct == "multipart/mixed" {
				walk(p, cp["boundary"])
				continue
			}
			fn(p)
		}
	}
	walk(bytes.NewReader(body), params["boundary"])
}

// batchAnswers posts a $batch and reads every part's answer, change sets flattened.
func (a *api) batchAnswers(body, ct string, prefer ...string) (*http.Response, []answer) {
	a.t.Helper()
	resp, raw := a.postBatch(body, ct, prefer...)
	var out []answer
	eachPart(a.t, resp, raw, func(p io.Reader) {
		pr, err := http.ReadResponse(bufio.NewReader(p), nil)
		if err != nil {
			a.t.Fatal(err)
		}
		raw, _ := io.ReadAll(pr.Body)
		var body map[string]any
		_ = json.Unmarshal(raw, &body)
		out = append(out, answer{pr.StatusCode, pr.Header, body})
	})
	return resp, out
}

// request is one request of the batched sync path, as a single request and as a batch part.
type request struct {
	method, path, body string
	header             []string
}

func (r request) part() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s /api/data/v9.2/%s HTTP/1.1\n", r.method, r.path)
	if r.body != "" {
		b.WriteString("Content-Type: application/json; type=entry\n")
	}
	for i := 0; i+1 < len(r.header); i += 2 {
		fmt.Fprintf(&b, "%s: %s\n", r.header[i], r.header[i+1])
	}
	return b.String() + "\n" + r.body
}

func keysOf(m map[string]any) string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	sort.Strings(k)
	return strings.Join(k, ",")
}

const (
	existingID = "11111111-0000-0000-0000-000000000001"
	newID      = "11111111-0000-0000-0000-000000000002"
	missingID  = "11111111-0000-0000-0000-000000000003"
)

// Every request kind the batched sync path sends answers inside a $batch as it does alone:
// conditional headers, 412 codes, 404 for a missing row, and the ETag of the row written.
func TestBatchPartsAnswerAsSingleRequests(t *testing.T) {
	represent := []string{"Prefer", "return=representation"}
	cases := []struct {
		name string
		req  func(etag string) request
		// want: status, error code, the body's properties
		status int
		code   string
		keys   string
	}{
		{"create with a given id", func(string) request {
			return request{"PATCH", "accounts(" + newID + ")?$select=accountid", `{"name":"New","accountnumber":"N1"}`, append([]string{"If-None-Match", "*"}, represent...)}
		}, 201, "", "@odata.context,@odata.etag,accountid"},
		{"create of an existing id", func(string) request {
			return request{"PATCH", "accounts(" + existingID + ")?$select=accountid", `{"name":"Again"}`, append([]string{"If-None-Match", "*"}, represent...)}
		}, 412, "0x80040237", "error"},
		{"create that breaks an alternate key", func(string) request {
			return request{"PATCH", "accounts(" + newID + ")?$select=accountid", `{"name":"Same number","accountnumber":"E1"}`, append([]string{"If-None-Match", "*"}, represent...)}
		}, 412, keyTaken, "error"},
		{"update at the current version", func(etag string) request {
			return request{"PATCH", "accounts(" + existingID + ")?$select=accountid", `{"name":"Updated"}`, append([]string{"If-Match", etag}, represent...)}
		}, 200, "", "@odata.context,@odata.etag,accountid"},
		{"update at a stale version", func(string) request {
			return request{"PATCH", "accounts(" + existingID + ")?$select=accountid", `{"name":"Stale"}`, append([]string{"If-Match", `W/"1"`}, represent...)}
		}, 412, "0x80060882", "error"},
		{"update of a missing row", func(string) request {
			return request{"PATCH", "accounts(" + missingID + ")?$select=accountid", `{"name":"Missing"}`, append([]string{"If-Match", `W/"1"`}, represent...)}
		}, 404, "0x80040217", "error"},
		{"update without representation", func(etag string) request {
			return request{"PATCH", "accounts(" + existingID + ")", `{"name":"Quiet"}`, []string{"If-Match", etag}}
		}, 204, "", ""},
		{"delete at the current version", func(etag string) request {
			return request{"DELETE", "accounts(" + existingID + ")", "", []string{"If-Match", etag}}
		}, 204, "", ""},
		{"delete at a stale version", func(string) request {
			return request{"DELETE", "accounts(" + existingID + ")", "", []string{"If-Match", `W/"1"`}}
		}, 412, "0x80060882", "error"},
		{"delete of a missing row", func(etag string) request {
			return request{"DELETE", "accounts(" + missingID + ")", "", []string{"If-Match", etag}}
		}, 404, "0x80040217", "error"},
		{"read the version", func(string) request {
			return request{"GET", "accounts(" + existingID + ")?$select=accountid", "", nil}
		}, 200, "", "@odata.context,@odata.etag,accountid"},
		{"read a missing row", func(string) request {
			return request{"GET", "accounts(" + missingID + ")?$select=accountid", "", nil}
		}, 404, "0x80040217", "error"},
		{"bulk upsert", func(string) request {
			return request{"POST", "accounts/Microsoft.Dynamics.CRM.UpsertMultiple",
				`{"Targets":[{"@odata.type":"Microsoft.Dynamics.CRM.account","accountid":"` + newID + `","name":"Bulk"}]}`, nil}
		}, 204, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got [2]answer
			for i, batched := range []bool{false, true} {
				a := newAPI(t)
				seeded := a.expect(201, "", "PATCH", "accounts("+existingID+")", `{"name":"Existing","accountnumber":"E1"}`, "If-None-Match", "*", "Prefer", "return=representation")
				req := tc.req(seeded["@odata.etag"].(string))
				if batched {
					body, ct := batch(req.part())
					resp, answers := a.batchAnswers(body, ct, "odata.continue-on-error")
					if resp.StatusCode != 200 || len(answers) != 1 {
						t.Fatalf("batch: %d, %d parts", resp.StatusCode, len(answers))
					}
					got[i] = answers[0]
				} else {
					resp, out := a.do(req.method, req.path, req.body, req.header...)
					got[i] = answer{resp.StatusCode, resp.Header, out}
				}
				g := got[i]
				if g.status != tc.status || code(g.body) != tc.code || keysOf(g.body) != tc.keys {
					t.Fatalf("batched=%v: %d %v, want %d %q with %s", batched, g.status, g.body, tc.status, tc.code, tc.keys)
				}
				if etag, ok := g.body["@odata.etag"]; ok {
					if row := a.emu.Row("accounts", mustUUID(t, g.body["accountid"])); row == nil || row["@odata.etag"] != etag {
						t.Fatalf("batched=%v: answered ETag %v, the row holds %v", batched, etag, row)
					}
				}
				a.checkIndexes()
			}
			for _, h := range []string{"OData-EntityId", "Preference-Applied", "OData-Version"} {
				single, part := got[0].header.Get(h), got[1].header.Get(h)
				if (single == "") != (part == "") || (h != "OData-EntityId" && single != part) {
					t.Errorf("%s: %q alone, %q in a batch", h, single, part)
				}
			}
		})
	}
}

// The latency model counts every request of a batch as a record, change sets' too, and a bulk
// action's targets; the limits count the batch as one request.
func TestBatchCountsEveryPartAsARecord(t *testing.T) {
	a := newAPI(t)
	before := a.emu.Stats().Users[emulator.DefaultApp.ClientID]
	body, ct := batch(
		request{"PATCH", "accounts(" + newID + ")?$select=accountid", `{"name":"One"}`, []string{"If-None-Match", "*"}}.part(),
		[]string{
			request{"POST", "accounts", `{"name":"Two"}`, nil}.part(),
			request{"POST", "accounts", `{"name":"Three"}`, nil}.part(),
		},
		request{"GET", "accounts(" + newID + ")?$select=accountid", "", nil}.part(),
		request{"POST", "accounts/Microsoft.Dynamics.CRM.CreateMultiple", `{"Targets":[` +
			`{"@odata.type":"Microsoft.Dynamics.CRM.account","name":"Four"},{"@odata.type":"Microsoft.Dynamics.CRM.account","name":"Five"},` +
			`{"@odata.type":"Microsoft.Dynamics.CRM.account","name":"Six"}]}`, nil}.part(),
		request{"DELETE", "accounts(" + missingID + ")", "", nil}.part(),
	)
	resp, answers := a.batchAnswers(body, ct, "odata.continue-on-error")
	var statuses []int
	for _, an := range answers {
		statuses = append(statuses, an.status)
		if an.header.Get("X-Emulator-Records") != "" {
			t.Errorf("a part carries the emulator's internal header: %v", an.header)
		}
	}
	if resp.StatusCode != 200 || fmt.Sprint(statuses) != "[204 204 204 200 200 404]" {
		t.Fatalf("batch: %d, parts %v", resp.StatusCode, statuses)
	}
	after := a.emu.Stats().Users[emulator.DefaultApp.ClientID]
	if n := after.Records - before.Records; n != 1+2+1+3+1 {
		t.Errorf("the batch carried %d records, want 8", n)
	}
	if n := after.Requests - before.Requests; n != 1 {
		t.Errorf("the batch counted as %d requests, want 1", n)
	}
}

func mustUUID(t *testing.T, v any) uuid.UUID {
	t.Helper()
	s, _ := v.(string)
	id, err := uuid.Parse(s)
	if err != nil {
		t.Fatalf("%v is not a row id: %v", v, err)
	}
	return id
}
