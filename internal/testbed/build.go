package testbed

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Binaries are the programs built from this checkout.
type Binaries struct {
	Dvsync     string
	NATSServer string // nats-server, from the nats-server/v2 module go.mod pins
}

// Build compiles dvsync and nats-server into dir with the go command, from the module of the
// working directory (so the command must run inside the dvsync checkout).
func Build(ctx context.Context, dir string) (Binaries, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return Binaries{}, fmt.Errorf("dvsync is built with the go command: %w", err)
	}
	out, err := exec.CommandContext(ctx, goBin, "env", "GOMOD").Output()
	mod := strings.TrimSpace(string(out))
	if err != nil || mod == "" || mod == os.DevNull {
		return Binaries{}, fmt.Errorf("run inside the dvsync module (go env GOMOD: %q, %v)", mod, err)
	}
	b := Binaries{Dvsync: filepath.Join(dir, "dvsync"), NATSServer: filepath.Join(dir, "nats-server")}
	for target, pkg := range map[string]string{b.Dvsync: "./cmd/dvsync", b.NATSServer: "github.com/nats-io/nats-server/v2"} {
		cmd := exec.CommandContext(ctx, goBin, "build", "-o", target, pkg)
		cmd.Dir = filepath.Dir(mod)
		if out, err := cmd.CombinedOutput(); err != nil {
			return Binaries{}, fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
		}
	}
	return b, nil
}
