// Package apiserver gives a test a real etcd and kube-apiserver (package
// tools/controlplane's), removed when the test ends. It lives in testkit so
// that the control plane the lab ships with does not carry package
// testing into svcproxy's binary.
package apiserver

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/svcproxy/svcproxy/internal/tools/controlplane"
)

// EnvSkip, set to 1, makes New (and every test that needs an API server)
// skip the test instead of running one.
const EnvSkip = "SVCPROXY_SKIP_API_TESTS"

// BinariesTimeout bounds finding the control-plane binaries, which may
// build them on first use.
const BinariesTimeout = 30 * time.Minute

// SkipIfUnwanted skips t if EnvSkip is set.
func SkipIfUnwanted(t testing.TB) {
	t.Helper()
	if os.Getenv(EnvSkip) == "1" {
		t.Skip(EnvSkip + "=1: skipping test that needs etcd and kube-apiserver")
	}
}

// New starts a control plane in t.TempDir() and stops it in t.Cleanup. It
// skips the test if SVCPROXY_SKIP_API_TESTS=1; any other failure to get the
// binaries or to start is fatal. When the test fails, the tail of the
// apiserver's log goes to t.Log.
func New(t testing.TB) *controlplane.ControlPlane {
	t.Helper()
	SkipIfUnwanted(t)
	ctx, cancel := context.WithTimeout(context.Background(), BinariesTimeout)
	defer cancel()
	dir, err := controlplane.Binaries(ctx, false)
	if err != nil {
		t.Fatalf("control-plane binaries (set %s=1 to skip API tests): %v", EnvSkip, err)
	}
	cp, err := controlplane.Start(ctx, controlplane.Options{Dir: dir, WorkDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cp.Stop()
		if t.Failed() {
			log := filepath.Join(cp.WorkDir(), "kube-apiserver.log")
			t.Logf("%s ends:\n%s", log, controlplane.Tail(log, 8192))
		}
	})
	return cp
}
