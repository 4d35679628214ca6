package controlplane

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// EnvSkip, set to 1, makes New skip the test instead of running the API
// server.
const EnvSkip = "SVCPROXY_SKIP_API_TESTS"

// binariesTimeout bounds Binaries in New, which may build on first use.
const binariesTimeout = 30 * time.Minute

// New starts a control plane in t.TempDir() and stops it in t.Cleanup. It
// skips the test if SVCPROXY_SKIP_API_TESTS=1; any other failure to get the
// binaries or to start is fatal. When the test fails, the tail of the
// apiserver's log goes to t.Log.
func New(t testing.TB) *ControlPlane {
	t.Helper()
	if os.Getenv(EnvSkip) == "1" {
		t.Skip(EnvSkip + "=1: skipping test that needs etcd and kube-apiserver")
	}
	ctx, cancel := context.WithTimeout(context.Background(), binariesTimeout)
	defer cancel()
	dir, err := Binaries(ctx, false)
	if err != nil {
		t.Fatalf("control-plane binaries (set %s=1 to skip API tests): %v", EnvSkip, err)
	}
	cp, err := Start(ctx, Options{Dir: dir, WorkDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cp.Stop()
		if t.Failed() {
			log := filepath.Join(cp.WorkDir(), "kube-apiserver.log")
			t.Logf("%s ends:\n%s", log, tail(log, 8192))
		}
	})
	return cp
}
