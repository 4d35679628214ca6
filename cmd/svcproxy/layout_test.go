package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestShipsNoTestSupport: svcproxy, the command we ship, depends on no
// package made for tests: nothing under internal/testkit, and not package
// testing (whose flags and weight would come with it). Test support that
// shipped code needs belongs in a package of its own outside testkit.
func TestShipsNoTestSupport(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", `{{.ImportPath}} {{join .Imports " "}}`, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for line := range strings.Lines(string(out)) {
		pkg, imports, _ := strings.Cut(strings.TrimSpace(line), " ")
		for imp := range strings.FieldsSeq(imports) {
			if imp == "testing" || strings.Contains(imp, "/internal/testkit") {
				t.Errorf("%s imports %s", pkg, imp)
			}
		}
	}
}
