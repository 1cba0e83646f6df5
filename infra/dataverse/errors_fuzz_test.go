package dataverse_test

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/dvsync/dvsync/infra/dataverse"
)

// FuzzParseErrorBody: any bytes give an error value with a status and a message, never a panic.
func FuzzParseErrorBody(f *testing.F) {
	data, err := os.ReadFile("../../domain/testdata/dataverse-errors.json")
	if err != nil {
		f.Fatal(err)
	}
	var corpus struct {
		Errors []struct {
			Body json.RawMessage `json:"body"`
		}
	}
	if err := json.Unmarshal(data, &corpus); err != nil {
		f.Fatal(err)
	}
	for _, e := range corpus.Errors {
		if e.Body != nil {
			f.Add(403, []byte(e.Body))
		}
	}
	f.Add(0, []byte(`{"error":{"code":123,"message":null,"@x":{"y":1}}}`))
	f.Add(503, []byte(`<html>Service Unavailable</html>`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		e, ok := dataverse.ParseErrorBody(status, nil, body)
		if e == nil || (ok && e.Code == "" && e.Message == "") {
			t.Fatalf("ParseErrorBody(%d, %q) = %+v, %v", status, body, e, ok)
		}
		if !ok && e.Status != status {
			t.Fatalf("status %d lost", status)
		}
	})
}
