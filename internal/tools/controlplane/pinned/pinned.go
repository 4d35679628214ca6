// Package pinned builds the control plane the lab and the API tests run
// (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl)
// and CoreDNS, at pinned versions, from the Go module proxy with the Go
// toolchain, or finds them already built.
//
// The pins are the Go modules in modules/ (etcd.mod and .sum, kube.mod,
// coredns.mod): each is the go.mod and go.sum of a small module that
// requires one project at one version. They are embedded in every svcproxy
// binary, so that a `go install`ed svcproxy builds the same binaries as a
// checkout, and hack/controlplane.sh builds through this package too: the
// pins exist once. They are not named go.mod because a directory holding a
// go.mod is another module, left out of this module's source as `go
// install` fetches it. To move a pin, copy the two files to a scratch
// directory as go.mod and go.sum, `go get` the new version there, `go mod
// tidy`, and copy them back.
package pinned

import (
	"bufio"
	"bytes"
	"context"
	"debug/buildinfo"
	"embed"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/svcproxy/svcproxy/internal/filelock"
)

//go:embed modules
var modules embed.FS

// Tool is one executable built from a pinned module.
type Tool struct {
	// Name is the executable's name.
	Name string
	// Module names the pinned module in modules/: "kube" for kube.mod.
	Module string
	// Package is the main package `go build` builds.
	Package string
	// Pin is the module whose version the tool is (required in Module).
	Pin string
}

// The pinned projects.
const (
	Kubernetes = "k8s.io/kubernetes"
	Etcd       = "go.etcd.io/etcd/server/v3"
	CoreDNS    = "github.com/coredns/coredns"
)

// Tools are every tool this package builds, in build order.
var Tools = []Tool{
	{"etcd", "etcd", Etcd, Etcd},
	{"kube-apiserver", "kube", Kubernetes + "/cmd/kube-apiserver", Kubernetes},
	{"kube-controller-manager", "kube", Kubernetes + "/cmd/kube-controller-manager", Kubernetes},
	{"kube-scheduler", "kube", Kubernetes + "/cmd/kube-scheduler", Kubernetes},
	{"kubectl", "kube", Kubernetes + "/cmd/kubectl", Kubernetes},
	{"coredns", "coredns", CoreDNS, CoreDNS},
}

// Version returns the version at which tool's module requires its pin.
func (t Tool) Version() string {
	v, err := requiredVersion(t.Module, t.Pin)
	if err != nil {
		panic(err) // the embedded modules are fixed at build time; the test reads every pin
	}
	return v
}

// VersionOf returns the pinned version of one of the projects above
// (Kubernetes, Etcd, CoreDNS).
func VersionOf(pin string) string {
	for _, t := range Tools {
		if t.Pin == pin {
			return t.Version()
		}
	}
	panic("pinned: no pin for " + pin)
}

// Key names the cache directory of one set of pins, as it always has:
// "kubernetes-v1.36.3-etcd-v3.6.8". CoreDNS's version is not in it: a
// cached binary is checked against its own pin (see Ensure).
func Key() string {
	return "kubernetes-" + VersionOf(Kubernetes) + "-etcd-" + VersionOf(Etcd)
}

// lookup returns the tool named name, or the zero Tool.
func lookup(name string) Tool {
	for _, t := range Tools {
		if t.Name == name {
			return t
		}
	}
	return Tool{}
}

// requiredVersion reads the version of pin from the require lines of
// modules/<module>.mod.
func requiredVersion(module, pin string) (string, error) {
	data, err := modules.ReadFile("modules/" + module + ".mod")
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		fields := strings.Fields(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "require "))
		if len(fields) >= 2 && fields[0] == pin {
			return fields[1], nil
		}
	}
	return "", fmt.Errorf("pinned: modules/%s.mod does not require %s", module, pin)
}

// ldflags are the linker flags of a tool: stripped, and for Kubernetes'
// binaries the version its release builds stamp (else they say v0.0.0 and
// kubectl warns of version skew).
func (t Tool) ldflags() string {
	flags := "-s -w"
	if t.Pin != Kubernetes {
		return flags
	}
	v := t.Version()
	major, minor, _ := strings.Cut(strings.TrimPrefix(v, "v"), ".")
	minor, _, _ = strings.Cut(minor, ".")
	for _, pkg := range []string{"k8s.io/component-base/version", "k8s.io/client-go/pkg/version"} {
		flags += fmt.Sprintf(" -X %s.gitVersion=%s -X %s.gitMajor=%s -X %s.gitMinor=%s -X %s.gitTreeState=clean",
			pkg, v, pkg, major, pkg, minor, pkg)
	}
	return flags
}

// Options configure Ensure.
type Options struct {
	// Dir receives the executables; the modules are written under Dir/src.
	Dir string
	// Go is the go command; "" looks for "go" on PATH.
	Go string
	// Progress receives a line per tool built, and the go command's own
	// output; nil discards them.
	Progress io.Writer

	// builtVersion returns the version of pin an executable was built
	// with ("" if none); tests replace it. Default: its Go build
	// information.
	builtVersion func(path, pin string) string
}

// ErrNoGo is returned (wrapped) when a tool must be built and there is no
// Go toolchain.
var ErrNoGo = errors.New("no Go toolchain")

// Ensure returns once opts.Dir holds every named tool built at its pinned
// version. A tool already there at its pin is kept; a missing one, or one
// built from another version, is built with the Go toolchain (the first
// time: minutes per tool; about 25 for all on 2 cores). Processes sharing
// Dir take turns, so only one builds.
func Ensure(ctx context.Context, opts Options, names ...string) error {
	var tools []Tool
	for _, name := range names {
		t := lookup(name)
		if t.Name == "" {
			return fmt.Errorf("pinned: unknown tool %q (known: %s)", name, strings.Join(Names(), ", "))
		}
		tools = append(tools, t)
	}
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	if opts.builtVersion == nil {
		opts.builtVersion = builtVersion
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return fmt.Errorf("pinned: %w", err)
	}
	unlock, err := filelock.Lock(filepath.Join(opts.Dir, ".lock"))
	if err != nil {
		return fmt.Errorf("pinned: %w", err)
	}
	defer unlock()
	stale := opts.stale(tools)
	for i, t := range stale {
		if err := opts.build(ctx, t, i+1, len(stale)); err != nil {
			return err
		}
	}
	return nil
}

// Names lists every tool's name.
func Names() []string {
	var names []string
	for _, t := range Tools {
		names = append(names, t.Name)
	}
	return names
}

// stale returns the tools to build: missing, or built from another version.
func (o Options) stale(tools []Tool) []Tool {
	var out []Tool
	for _, t := range tools {
		path := filepath.Join(o.Dir, t.Name)
		if _, err := os.Stat(path); err != nil {
			out = append(out, t)
			continue
		}
		if got := o.builtVersion(path, t.Pin); got != t.Version() {
			fmt.Fprintf(o.Progress, "%s in %s was built from %s %s, the pin is %s: rebuilding\n", t.Name, o.Dir, t.Pin, orUnknown(got), t.Version())
			out = append(out, t)
		}
	}
	return out
}

func orUnknown(v string) string {
	if v == "" {
		return "an unknown version"
	}
	return v
}

// build writes t's module under Dir/src and runs go build into Dir.
func (o Options) build(ctx context.Context, t Tool, n, of int) error {
	goCmd, err := o.goCommand()
	if err != nil {
		return fmt.Errorf("building %s %s: %w", t.Pin, t.Version(), err)
	}
	src := filepath.Join(o.Dir, "src", t.Module)
	if err := writeModule(src, t.Module); err != nil {
		return err
	}
	fmt.Fprintf(o.Progress, "building %s (%d of %d): %s %s from the Go module proxy into %s; this takes minutes, once\n",
		t.Name, n, of, t.Pin, t.Version(), o.Dir)
	start := time.Now()
	out := filepath.Join(o.Dir, t.Name)
	cmd := exec.CommandContext(ctx, goCmd, "build", "-trimpath", "-ldflags", t.ldflags(), "-o", out+".tmp", t.Package)
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
	cmd.Stdout, cmd.Stderr = o.Progress, o.Progress
	if err := cmd.Run(); err != nil {
		os.Remove(out + ".tmp")
		return fmt.Errorf("building %s: go build %s (in %s): %w", t.Name, t.Package, src, err)
	}
	if err := os.Rename(out+".tmp", out); err != nil {
		return fmt.Errorf("pinned: %w", err)
	}
	fmt.Fprintf(o.Progress, "built %s in %s\n", t.Name, time.Since(start).Round(time.Second))
	return nil
}

// goCommand finds the go command, or says what is missing.
func (o Options) goCommand() (string, error) {
	name := o.Go
	if name == "" {
		name = "go"
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%w: the control plane is built from source the first time, and %q is not on PATH; "+
			"install Go 1.26 or later (https://go.dev/dl/), or point SVCPROXY_CONTROLPLANE_BIN at a directory holding %s",
			ErrNoGo, name, strings.Join(Names(), ", "))
	}
	return path, nil
}

// writeModule writes modules/<module>.mod and .sum as go.mod and go.sum
// in dir.
func writeModule(dir, module string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("pinned: %w", err)
	}
	for ext, name := range map[string]string{".mod": "go.mod", ".sum": "go.sum"} {
		data, err := modules.ReadFile("modules/" + module + ext)
		if err != nil {
			return fmt.Errorf("pinned: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return fmt.Errorf("pinned: %w", err)
		}
	}
	return nil
}

// builtVersion reads the version of module pin from an executable's Go
// build information: the main module's, or the dependency's.
func builtVersion(path, pin string) string {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return ""
	}
	if bi.Main.Path == pin {
		return bi.Main.Version
	}
	i := slices.IndexFunc(bi.Deps, func(d *debug.Module) bool { return d.Path == pin })
	if i < 0 {
		return ""
	}
	if r := bi.Deps[i].Replace; r != nil {
		return r.Version
	}
	return bi.Deps[i].Version
}
