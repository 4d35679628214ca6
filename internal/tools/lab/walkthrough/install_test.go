package walkthrough_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/svcproxy/svcproxy/internal/tools/controlplane"
	"github.com/svcproxy/svcproxy/internal/tools/controlplane/pinned"
	"github.com/svcproxy/svcproxy/internal/tools/lab"
)

// TestLabOutsideTheRepository runs `svcproxy lab` as someone who installed
// it with `go install` would: the binary alone in a directory, run from a
// directory outside the checkout, with a home of its own. Without Go and
// without binaries it says what it needs; with the control plane in the
// user's cache directory (seeded from the checkout's .cache/, so that
// nothing is built, and with no Go on PATH to prove it) the lab comes up
// ready, answers kubectl, and goes down leaving nothing.
func TestLabOutsideTheRepository(t *testing.T) {
	self := prepare(t) // builds svcproxy into a temporary directory
	installed := filepath.Join(t.TempDir(), "svcproxy")
	if err := os.Rename(self, installed); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	run := func(home string, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, installed, args...)
		cmd.Dir = home
		cmd.Env = append(withoutGo(os.Environ()), "HOME="+home)
		out, err := cmd.CombinedOutput()
		t.Logf("svcproxy %s:\n%s", strings.Join(args, " "), out)
		return string(out), err
	}

	emptyHome := t.TempDir()
	out, err := run(emptyHome, "lab", "up", "--name", "nogo", "--nodes", "1")
	if err == nil || !strings.Contains(out, "install Go 1.26 or later") {
		t.Errorf("lab up without Go or binaries: %v, want it to say it needs Go", err)
	}
	checkGone(t, "nogo", nil)

	home := t.TempDir()
	seedCache(t, filepath.Join(home, ".cache", "svcproxy", "controlplane", pinned.Key()))
	name := "outside"
	t.Cleanup(func() { lab.Down(context.Background(), name) })
	out, err = run(home, "lab", "up", "--name", name, "--nodes", "1")
	if err != nil || !strings.Contains(out, "ready: 1 nodes") || strings.Contains(out, "building") {
		t.Fatalf("lab up outside the repository: %v", err)
	}
	st, err := lab.Load(name)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(home, ".cache", "svcproxy", "controlplane", pinned.Key()); st.BinDir != want {
		t.Errorf("the lab runs binaries from %s, want the user's cache %s", st.BinDir, want)
	}
	if out, err := run(home, "lab", "kubectl", "--name="+name, "get", "nodes"); err != nil || !strings.Contains(out, "node1   Ready") {
		t.Errorf("lab kubectl get nodes: %v", err)
	}
	procs, _ := st.Processes()
	if _, err := run(home, "lab", "down", "--name", name); err != nil {
		t.Fatal(err)
	}
	checkGone(t, name, procs)
}

// seedCache links the checkout's control-plane binaries into dir.
func seedCache(t *testing.T, dir string) {
	t.Helper()
	src, err := controlplane.BinariesDir()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range pinned.Names() {
		if err := os.Symlink(filepath.Join(src, name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

// withoutGo returns env with no directory holding a go command on PATH.
func withoutGo(env []string) []string {
	var out []string
	for _, kv := range env {
		path, ok := strings.CutPrefix(kv, "PATH=")
		if !ok {
			if !strings.HasPrefix(kv, "HOME=") && !strings.HasPrefix(kv, "XDG_CACHE_HOME=") {
				out = append(out, kv)
			}
			continue
		}
		dirs := slices.DeleteFunc(filepath.SplitList(path), func(dir string) bool {
			_, err := os.Stat(filepath.Join(dir, "go"))
			return err == nil
		})
		out = append(out, "PATH="+strings.Join(dirs, string(filepath.ListSeparator)))
	}
	return out
}
