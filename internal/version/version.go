// Package version says which svcproxy a binary is: its version and commit,
// and the kube-proxy release whose command line and configuration file it
// takes. `svcproxy version`, the startup log line and the image's labels
// all read it from here.
//
// The version and commit come from, in order: the linker (-X, as `make
// build` and `make image` set them from git), then the build information
// the Go toolchain records (`go install ...@v1.2.3` records v1.2.3; a build
// from a checkout with VCS stamping records vcs.revision; a pseudo-version
// such as v0.0.0-20261202124851-7b466a4c0a1b names its commit).
package version

import (
	"fmt"
	"io"
	"regexp"
	"runtime"
	"runtime/debug"
)

// KubeProxy is the kube-proxy release whose flags and
// KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1) svcproxy takes.
const KubeProxy = "v1.36"

// Set at build time with -ldflags "-X github.com/svcproxy/svcproxy/internal/version.Version=...
// -X github.com/svcproxy/svcproxy/internal/version.Commit=...". Empty means:
// ask the build information.
var (
	Version string
	Commit  string
)

// Info describes one build.
type Info struct {
	// Version is a release ("v1.2.3"), a pseudo-version, `git describe`
	// output, or "devel" when nothing recorded one.
	Version string
	// Commit is the commit's hash (possibly abbreviated), or "" if unknown.
	Commit string
	// Modified says the tree had uncommitted changes.
	Modified bool
	// Go is the toolchain that built the binary.
	Go string
}

// Get describes the running binary.
func Get() Info {
	bi, _ := debug.ReadBuildInfo()
	return resolve(Version, Commit, bi)
}

// resolve prefers the linker's values, then the build information.
func resolve(linkedVersion, linkedCommit string, bi *debug.BuildInfo) Info {
	info := Info{Version: linkedVersion, Commit: linkedCommit, Go: runtime.Version()}
	if bi != nil {
		info.Go = bi.GoVersion
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision" && info.Commit == "":
				info.Commit = s.Value
			case s.Key == "vcs.modified":
				info.Modified = s.Value == "true"
			}
		}
	}
	if info.Commit == "" {
		info.Commit = pseudoCommit(info.Version)
	}
	if info.Version == "" {
		info.Version = "devel"
	}
	return info
}

// pseudo matches the commit at the end of a Go pseudo-version
// (vX.Y.Z-yyyymmddhhmmss-abcdefabcdef, or after a pre-release ".0.").
var pseudo = regexp.MustCompile(`[-.]\d{14}-([0-9a-f]{12})(\+dirty)?$`)

func pseudoCommit(v string) string {
	if m := pseudo.FindStringSubmatch(v); m != nil {
		return m[1]
	}
	return ""
}

// Print writes what `svcproxy version` shows.
func (i Info) Print(w io.Writer) {
	commit := i.Commit
	switch {
	case commit == "":
		commit = "unknown"
	case i.Modified:
		commit += " (with uncommitted changes)"
	}
	fmt.Fprintf(w, "svcproxy %s\ncommit:     %s\nkube-proxy: %s compatible (its flags and KubeProxyConfiguration)\ngo:         %s %s/%s\n",
		i.Version, commit, KubeProxy, i.Go, runtime.GOOS, runtime.GOARCH)
}
