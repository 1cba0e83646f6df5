package emulator_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/dvsync/dvsync/infra/emulator"
)

// TestConformanceWithDynamicsWebAPI drives the emulator with dynamics-web-api, a published
// Dataverse Web API client, so that the emulator is checked against a client nobody here wrote.
// `make test` installs it (npm ci in conformance/).
func TestConformanceWithDynamicsWebAPI(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed; the conformance suite needs Node.js 18 or newer")
	}
	if _, err := os.Stat(filepath.Join("conformance", "node_modules", "dynamics-web-api")); err != nil {
		t.Fatal("dynamics-web-api is not installed: run `make deps` (npm ci in infra/emulator/conformance)")
	}
	emu := emulator.New()
	srv := httptest.NewServer(emu.Handler())
	defer srv.Close()

	cmd := exec.Command(node, "conformance.mjs")
	cmd.Dir = "conformance"
	cmd.Env = append(os.Environ(), "DATAVERSE_URL="+srv.URL, "ADMIN_URL="+srv.URL,
		"TOKEN_URL="+srv.URL+"/"+emulator.DefaultTenant+"/oauth2/v2.0/token",
		"CLIENT_ID="+emulator.DefaultApp.ClientID, "CLIENT_SECRET="+emulator.DefaultApp.ClientSecret)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, runErr := cmd.Output()
	results := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var r struct {
			Name  string `json:"name"`
			OK    bool   `json:"ok"`
			Error string `json:"error"`
		}
		if json.Unmarshal(sc.Bytes(), &r) != nil {
			continue
		}
		results++
		t.Run(r.Name, func(t *testing.T) {
			if !r.OK {
				t.Fatal(r.Error)
			}
		})
	}
	if results == 0 || (runErr != nil && !t.Failed()) {
		t.Fatalf("the conformance script ran no check (%v): %s", runErr, stderr.String())
	}
}
