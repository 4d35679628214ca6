// Package cachedir says where svcproxy's tools and tests keep what they
// build or download (the control-plane binaries, the image's Debian
// packages, the test VM's kernel): .cache/ of the svcproxy checkout the
// working directory is in, as `make test` and `make demo` run, else
// svcproxy/ in the user's cache directory ($XDG_CACHE_HOME or ~/.cache), as
// a `go install`ed svcproxy runs.
package cachedir

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// modulePath is svcproxy's module: a directory whose go.mod declares it is
// a checkout of the repository.
const modulePath = "github.com/svcproxy/svcproxy"

// Dir returns the cache directory (it may not exist yet).
func Dir() (string, error) {
	if root, ok := checkoutRoot(); ok {
		return filepath.Join(root, ".cache"), nil
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache directory: %w (set XDG_CACHE_HOME)", err)
	}
	return filepath.Join(cache, "svcproxy"), nil
}

// checkoutRoot walks up from the working directory to the go.mod of
// modulePath.
func checkoutRoot() (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		if isModuleRoot(dir) {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
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
