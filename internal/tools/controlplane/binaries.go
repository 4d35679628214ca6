package controlplane

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/svcproxy/svcproxy/internal/filelock"
)

// modulePath is the module whose root holds hack/controlplane.sh.
const modulePath = "github.com/svcproxy/svcproxy"

// EnvBinaries names a directory with prebuilt etcd and kube-apiserver
// binaries; when set, Binaries returns it instead of running the build script.
const EnvBinaries = "SVCPROXY_CONTROLPLANE_BIN"

// The executables Start needs in Options.Dir, without and with Controllers.
var (
	coreBinaries = []string{"etcd", "kube-apiserver"}
	allBinaries  = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"}
)

// binaries are the executables these options need.
func (o Options) binaries() []string {
	if o.Controllers {
		return allBinaries
	}
	return coreBinaries
}

// Binaries returns the directory holding etcd and kube-apiserver and, with
// controllers, kube-controller-manager, kube-scheduler and kubectl, and
// the extra tools hack/controlplane.sh knows (the lab adds coredns). It
// honours SVCPROXY_CONTROLPLANE_BIN; otherwise it runs <repo
// root>/hack/controlplane.sh, which builds the binaries on first use
// (minutes) and prints the directory. The script's progress goes to
// os.Stderr. Concurrent callers in separate processes are serialized with a
// file lock so only one builds.
func Binaries(ctx context.Context, controllers bool, extra ...string) (string, error) {
	names := slices.Concat(Options{Controllers: controllers}.binaries(), extra)
	if dir := os.Getenv(EnvBinaries); dir != "" {
		return dir, checkBinaries(dir, names)
	}
	root, err := repoRoot()
	if err != nil {
		return "", fmt.Errorf("%w: run from the svcproxy repository (hack/controlplane.sh builds them), or set %s to a directory holding %s",
			err, EnvBinaries, strings.Join(names, ", "))
	}
	unlock, err := filelock.Lock(filepath.Join(root, ".cache", "controlplane.lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	dir, err := runScript(ctx, filepath.Join(root, "hack", "controlplane.sh"), names)
	if err != nil {
		return "", err
	}
	return dir, checkBinaries(dir, names)
}

// checkBinaries reports whether dir holds the executables names.
func checkBinaries(dir string, names []string) error {
	for _, name := range names {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			return fmt.Errorf("controlplane: %w", err)
		}
		if fi.IsDir() || fi.Mode()&0o111 == 0 {
			return fmt.Errorf("controlplane: %s is not an executable", filepath.Join(dir, name))
		}
	}
	return nil
}

// runScript runs the build script for tools and returns the last line it
// printed.
func runScript(ctx context.Context, script string, tools []string) (string, error) {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", append([]string{script}, tools...)...)
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("controlplane: %s: %w", script, err)
	}
	var last string
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			last = line
		}
	}
	if last == "" {
		return "", fmt.Errorf("controlplane: %s printed no directory", script)
	}
	return last, nil
}

// repoRoot walks up from the working directory to the go.mod of modulePath.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if isModuleRoot(dir) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("controlplane: no go.mod of " + modulePath + " above the working directory")
		}
		dir = parent
	}
}

// isModuleRoot reports whether dir/go.mod declares modulePath.
func isModuleRoot(dir string) bool {
	data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) >= 2 && fields[0] == "module" {
			return strings.Trim(fields[1], `"`) == modulePath
		}
	}
	return false
}
