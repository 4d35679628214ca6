package version

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	vcs := func(rev, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	for _, c := range []struct {
		name             string
		linkedV, linkedC string
		bi               *debug.BuildInfo
		version, commit  string
		modified         bool
	}{
		{name: "linker wins", linkedV: "v0.3.0-4-gabc1234", linkedC: "abc1234def",
			bi:      &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261202124851-7b466a4c0a1b"}, Settings: vcs("7b466a4c0a1bffff", "true")},
			version: "v0.3.0-4-gabc1234", commit: "abc1234def", modified: true},
		{name: "go install of a release", bi: &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}},
			version: "v1.2.3", commit: ""},
		{name: "go install of a commit", bi: &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261202124851-7b466a4c0a1b"}},
			version: "v0.0.0-20261202124851-7b466a4c0a1b", commit: "7b466a4c0a1b"},
		{name: "pseudo-version after a tag, dirty", bi: &debug.BuildInfo{Main: debug.Module{Version: "v1.2.4-0.20261202124851-7b466a4c0a1b+dirty"}},
			version: "v1.2.4-0.20261202124851-7b466a4c0a1b+dirty", commit: "7b466a4c0a1b"},
		{name: "checkout with VCS stamping", bi: &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs("7b466a4c0a1bffff", "false")},
			version: "devel", commit: "7b466a4c0a1bffff"},
		{name: "nothing known", bi: nil, version: "devel", commit: ""},
	} {
		got := resolve(c.linkedV, c.linkedC, c.bi)
		if got.Version != c.version || got.Commit != c.commit || got.Modified != c.modified {
			t.Errorf("%s: got %+v, want version %q commit %q modified %v", c.name, got, c.version, c.commit, c.modified)
		}
	}
}

func TestPrint(t *testing.T) {
	var b strings.Builder
	Info{Version: "v1.2.3", Commit: "abc", Modified: true, Go: "go1.26.8"}.Print(&b)
	for _, want := range []string{"svcproxy v1.2.3\n", "commit:     abc (with uncommitted changes)\n", "kube-proxy: v1.36 compatible", "go:         go1.26.8 "} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, b.String())
		}
	}
}
