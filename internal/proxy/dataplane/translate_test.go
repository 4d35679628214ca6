package dataplane_test

import (
	"bufio"
	"bytes"
	"fmt"
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const planPath = "github.com/svcproxy/svcproxy/internal/proxy/plan"

// policyInputs are what the plan resolves its outcomes from, by type and
// field ("*" for every field of the type). A dataplane reading one of them
// would be deciding again what the plan has decided.
var policyInputs = map[string][]string{
	"ServicePort": {"Inputs", "ClusterEndpoints", "LocalEndpoints"},
	"Inputs":      {"*"},
	"Endpoint":    {"*"},
	"Hints":       {"*"},
	"Config":      {"ClusterCIDRs", "MasqueradeAll", "NodePortAddresses", "LocalhostNodePorts", "Scheduler"},
}

// translators are the packages that turn the plan's outcomes into rules,
// flows and answers; statusDisplay is the one file allowed to show the
// inputs, for people.
var (
	translators = []string{
		"./internal/proxy/dataplane/...",
		"./internal/proxy/conntrack",
		"./internal/proxy/health",
		"./internal/proxy/explain",
	}
	statusDisplay = "internal/proxy/explain/status.go"
)

// TestDataplanesOnlyTranslate walks the syntax of every translator,
// type-checked, and fails on any read of a policy input of the plan:
// traffic policies, topology and hints, endpoint conditions, the pools
// behind the routes' backs, cluster CIDRs, masqueradeAll, the raw
// node-port settings.
func TestDataplanesOnlyTranslate(t *testing.T) {
	root := moduleRoot(t)
	pkgs, exports := listPackages(t, root, translators...)
	fset := token.NewFileSet()
	imp := importer.ForCompiler(fset, "gc", func(path string) (io.ReadCloser, error) {
		if exports[path] == "" {
			return nil, fmt.Errorf("no export data for %s", path)
		}
		return os.Open(exports[path])
	})
	for _, pkg := range pkgs {
		for _, v := range policyReads(t, fset, imp, pkg) {
			if !strings.HasSuffix(v.file, statusDisplay) {
				t.Errorf("%s:%d reads the plan's policy input %s: read the outcomes (plan.ServicePort routes, pools through Backends, Hairpin, Live, HealthCheck; Plan.NodePorts) instead",
					strings.TrimPrefix(v.file, root+"/"), v.line, v.what)
			}
		}
	}
	if len(pkgs) < 6 {
		t.Fatalf("only %d translator packages found: %v", len(pkgs), pkgs)
	}
}

// listedPackage is a package to check: its import path and files.
type listedPackage struct {
	path  string
	dir   string
	files []string
}

// listPackages lists the packages matching patterns with their Go files
// (tests left out), and the export data of everything they depend on.
func listPackages(t *testing.T, root string, patterns ...string) ([]listedPackage, map[string]string) {
	t.Helper()
	args := append([]string{"list", "-export", "-deps", "-f", "{{.ImportPath}}\t{{.Export}}\t{{.DepOnly}}\t{{.Dir}}\t{{join .GoFiles \" \"}}"}, patterns...)
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	exports := map[string]string{}
	var pkgs []listedPackage
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		if len(f) != 5 {
			t.Fatalf("go list line %q", sc.Text())
		}
		exports[f[0]] = f[1]
		if f[2] == "false" {
			pkgs = append(pkgs, listedPackage{path: f[0], dir: f[3], files: strings.Fields(f[4])})
		}
	}
	return pkgs, exports
}

// violation is one read of a policy input.
type violation struct {
	file string
	line int
	what string
}

// policyReads type-checks one package and returns its selections of
// policy inputs.
func policyReads(t *testing.T, fset *token.FileSet, imp types.Importer, pkg listedPackage) []violation {
	t.Helper()
	var files []*ast.File
	for _, name := range pkg.files {
		f, err := parser.ParseFile(fset, filepath.Join(pkg.dir, name), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	info := &types.Info{Selections: map[*ast.SelectorExpr]*types.Selection{}}
	if _, err := (&types.Config{Importer: imp}).Check(pkg.path, fset, files, info); err != nil {
		t.Fatalf("type-checking %s: %v", pkg.path, err)
	}
	var out []violation
	for sel, s := range info.Selections {
		if what := policyInput(s); what != "" {
			pos := fset.Position(sel.Sel.Pos())
			out = append(out, violation{file: pos.Filename, line: pos.Line, what: what})
		}
	}
	return out
}

// policyInput names the policy input a selection reads, or "".
func policyInput(s *types.Selection) string {
	recv := s.Recv()
	if p, ok := recv.(*types.Pointer); ok {
		recv = p.Elem()
	}
	named, ok := recv.(*types.Named)
	if !ok || named.Obj().Pkg() == nil || named.Obj().Pkg().Path() != planPath || s.Kind() != types.FieldVal {
		return ""
	}
	for _, field := range policyInputs[named.Obj().Name()] {
		if field == "*" || field == s.Obj().Name() {
			return "plan." + named.Obj().Name() + "." + s.Obj().Name()
		}
	}
	return ""
}

// moduleRoot is the directory holding go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test")
		}
		dir = parent
	}
}
