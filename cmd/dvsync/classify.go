package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/dataverse"
)

// runClassify reads one Dataverse error response body from standard input and prints how dvsync
// sorts it, for support staff who paste an error: exit 0 when it classified, 2 on unreadable input.
func runClassify(stdin io.Reader, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("classify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	status := fs.Int("status", 0, "the HTTP status Dataverse answered with (else taken from the body's annotations)")
	user := fs.String("integration-user", os.Getenv("DATAVERSE_INTEGRATION_USER"), "the integration user's name, for resolutions")
	if err := parse(fs, args); err != nil {
		return err
	}
	body, err := io.ReadAll(io.LimitReader(stdin, 4<<20))
	if err != nil {
		return usageError{fmt.Errorf("reading standard input: %w", err)}
	}
	dv, ok := dataverse.ParseErrorBody(*status, nil, body)
	if !ok {
		return usageError{fmt.Errorf(`standard input is not a Dataverse error body {"error":{"code":"...","message":"..."}}`)}
	}
	f := domain.Classifier{IntegrationUser: *user}.Classify(dv)
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(map[string]any{"class": f.Class, "kind": f.Kind, "details": f.Details, "message": f.Message,
		"resolution": f.Resolution, "dataverse": map[string]any{"status": dv.Status, "code": dv.Code}})
}
