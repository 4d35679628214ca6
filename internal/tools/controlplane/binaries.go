package controlplane

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/svcproxy/svcproxy/internal/cachedir"
	"github.com/svcproxy/svcproxy/internal/tools/controlplane/pinned"
)

// EnvBinaries names a directory with prebuilt binaries; when set, Binaries
// returns it instead of building or looking in the cache.
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
// the extra tools named (the lab adds coredns), each at its pinned version
// (package pinned). It honours SVCPROXY_CONTROLPLANE_BIN; otherwise the
// directory is BinariesDir(), and what it lacks is built there on first
// use with the Go toolchain (minutes), with progress on os.Stderr.
func Binaries(ctx context.Context, controllers bool, extra ...string) (string, error) {
	names := slices.Concat(Options{Controllers: controllers}.binaries(), extra)
	if dir := os.Getenv(EnvBinaries); dir != "" {
		return dir, checkBinaries(dir, names)
	}
	dir, err := BinariesDir()
	if err != nil {
		return "", err
	}
	if err := pinned.Ensure(ctx, pinned.Options{Dir: dir, Progress: os.Stderr}, names...); err != nil {
		return "", fmt.Errorf("controlplane: %w", err)
	}
	return dir, checkBinaries(dir, names)
}

// BinariesDir is where the pinned binaries are cached: controlplane/<pins>
// in the cache directory (package cachedir: .cache/ of the checkout, or the
// user's cache directory).
func BinariesDir() (string, error) {
	cache, err := cachedir.Dir()
	if err != nil {
		return "", fmt.Errorf("controlplane: %w, or %s", err, EnvBinaries)
	}
	return filepath.Join(cache, "controlplane", pinned.Key()), nil
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
