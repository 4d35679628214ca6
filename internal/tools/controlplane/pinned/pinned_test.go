package pinned

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPinsAreTheReleasesWeRun(t *testing.T) {
	want := map[string]string{
		"etcd": "v3.6.8", "kube-apiserver": "v1.36.3", "kube-controller-manager": "v1.36.3",
		"kube-scheduler": "v1.36.3", "kubectl": "v1.36.3", "coredns": "v1.14.7",
	}
	for _, tool := range Tools {
		if got := tool.Version(); got != want[tool.Name] {
			t.Errorf("%s: pinned at %q, want %q", tool.Name, got, want[tool.Name])
		}
	}
	if got := Key(); got != "kubernetes-v1.36.3-etcd-v3.6.8" {
		t.Errorf("Key() = %q", got)
	}
	if got := lookup("kubectl").ldflags(); !strings.Contains(got, "k8s.io/component-base/version.gitVersion=v1.36.3 ") ||
		!strings.Contains(got, "gitMajor=1 ") || !strings.Contains(got, "gitMinor=36 ") {
		t.Errorf("kubectl's ldflags %q do not stamp v1.36.3", got)
	}
}

// fakeGo is a go command that records each call (working directory and
// arguments) in calls.log, refuses to build without the module's go.mod
// beside it, fails for a package named in FAKE_GO_FAIL, and otherwise
// writes "built PACKAGE" to its -o file.
const fakeGo = `#!/bin/sh
dir=$(dirname "$0")
echo "$PWD $GOFLAGS $*" >> "$dir/calls.log"
[ -f go.mod ] && [ -f go.sum ] || { echo "no go.mod in $PWD" >&2; exit 1; }
while [ $# -gt 1 ]; do
	case "$1" in -o) out=$2; shift ;; esac
	shift
done
[ "$1" = "$FAKE_GO_FAIL" ] && { echo "go: build failed" >&2; printf partial > "$out"; exit 1; }
echo "built $1" > "$out"
`

// toolchain returns Options for a fresh Dir and the fake go, and a
// function reading the calls it got. Executables it wrote are taken as
// built at the pin; a file holding "old" as built from v0.0.1.
func toolchain(t *testing.T) (Options, func() []string) {
	t.Helper()
	bin := t.TempDir()
	goCmd := filepath.Join(bin, "go")
	if err := os.WriteFile(goCmd, []byte(fakeGo), 0o755); err != nil {
		t.Fatal(err)
	}
	var progress strings.Builder
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("progress:\n%s", progress.String())
		}
	})
	opts := Options{Dir: filepath.Join(t.TempDir(), "cache"), Go: goCmd, Progress: &progress,
		builtVersion: func(path, pin string) string {
			data, _ := os.ReadFile(path)
			switch {
			case strings.HasPrefix(string(data), "built "):
				for _, tool := range Tools {
					if tool.Pin == pin {
						return tool.Version()
					}
				}
			case string(data) == "old":
				return "v0.0.1"
			}
			return ""
		}}
	calls := func() []string {
		data, _ := os.ReadFile(filepath.Join(bin, "calls.log"))
		return strings.Fields(strings.ReplaceAll(string(data), "\n", " | "))
	}
	return opts, calls
}

func TestEnsureBuildsWhatIsMissingOrStaleAndFindsTheRest(t *testing.T) {
	opts, calls := toolchain(t)
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(opts.Dir, "etcd"), "built go.etcd.io/etcd/server/v3") // at the pin
	writeFile(t, filepath.Join(opts.Dir, "kube-apiserver"), "old")                   // another version
	if err := Ensure(context.Background(), opts, "etcd", "kube-apiserver", "kubectl"); err != nil {
		t.Fatal(err)
	}
	log := strings.Join(calls(), " ")
	kubeSrc := filepath.Join(opts.Dir, "src", "kube")
	for _, want := range []string{
		kubeSrc + " -mod=mod build -trimpath -ldflags -s -w -X k8s.io/component-base/version.gitVersion=v1.36.3",
		"-o " + filepath.Join(opts.Dir, "kube-apiserver.tmp") + " k8s.io/kubernetes/cmd/kube-apiserver",
		"-o " + filepath.Join(opts.Dir, "kubectl.tmp") + " k8s.io/kubernetes/cmd/kubectl",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("go was not called with %q; calls: %s", want, log)
		}
	}
	if strings.Contains(log, "etcd") {
		t.Errorf("etcd was at its pin but was rebuilt: %s", log)
	}
	for _, name := range []string{"kube-apiserver", "kubectl"} {
		if data, _ := os.ReadFile(filepath.Join(opts.Dir, name)); string(data) != "built k8s.io/kubernetes/cmd/"+name+"\n" {
			t.Errorf("%s holds %q", name, data)
		}
	}
	embedded, _ := modules.ReadFile("modules/kube.mod")
	if written, _ := os.ReadFile(filepath.Join(kubeSrc, "go.mod")); string(written) != string(embedded) {
		t.Error("src/kube/go.mod is not the embedded kube.mod")
	}
	progress := opts.Progress.(*strings.Builder).String()
	for _, want := range []string{"kube-apiserver in " + opts.Dir + " was built from k8s.io/kubernetes v0.0.1, the pin is v1.36.3: rebuilding",
		"building kubectl (2 of 2): k8s.io/kubernetes v1.36.3 from the Go module proxy", "built kubectl in "} {
		if !strings.Contains(progress, want) {
			t.Errorf("progress lacks %q", want)
		}
	}

	// Everything is there now: nothing is built, and Go is not needed.
	n := len(calls())
	opts.Go = filepath.Join(t.TempDir(), "no-go-here")
	if err := Ensure(context.Background(), opts, "etcd", "kube-apiserver", "kubectl"); err != nil {
		t.Fatalf("with every tool built: %v", err)
	}
	if len(calls()) != n {
		t.Errorf("a second Ensure called go: %v", calls()[n:])
	}
}

func TestEnsureSaysWhatIsMissing(t *testing.T) {
	opts, _ := toolchain(t)
	opts.Go = "svcproxy-test-no-such-go"
	err := Ensure(context.Background(), opts, "coredns")
	if !errors.Is(err, ErrNoGo) || !strings.Contains(err.Error(), "install Go 1.26 or later") ||
		!strings.Contains(err.Error(), "building github.com/coredns/coredns v1.14.7") || !strings.Contains(err.Error(), "SVCPROXY_CONTROLPLANE_BIN") {
		t.Errorf("without go: %v", err)
	}
	if err := Ensure(context.Background(), opts, "etcd", "kube-proxy"); err == nil || !strings.Contains(err.Error(), `unknown tool "kube-proxy"`) {
		t.Errorf("unknown tool: %v", err)
	}
}

func TestEnsureLeavesNothingOfAFailedBuild(t *testing.T) {
	opts, _ := toolchain(t)
	t.Setenv("FAKE_GO_FAIL", CoreDNS)
	err := Ensure(context.Background(), opts, "etcd", "coredns")
	if err == nil || !strings.Contains(err.Error(), "building coredns: go build github.com/coredns/coredns") {
		t.Fatalf("failed build: %v", err)
	}
	entries, _ := os.ReadDir(opts.Dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if got := strings.Join(names, " "); got != ".lock etcd src" {
		t.Errorf("Dir holds %q after coredns failed, want only etcd built", got)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
}
