package nftables

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/flows"
	"github.com/svcproxy/svcproxy/internal/testkit/testnet"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// TestGolden compares the table of one full sync of the flow fixture with
// testdata/fixture.golden (go test -update rewrites it). The same text is
// loaded by the real nft in the kernel tests' netns, so the golden is also
// known to be valid nft syntax.
func TestGolden(t *testing.T) {
	p, _ := plan.Build(flows.FixtureFor(Capabilities))
	got := fullSyncDump(t, p)
	path := filepath.Join("testdata", "fixture.golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Fatalf("table differs from %s (go test -update rewrites it):\n%s", path, lineDiff(got, string(want)))
	}
	loadInKernel(t, path)
}

// loadInKernel has the real nft load a dump into a throwaway namespace.
func loadInKernel(t *testing.T, path string) {
	if err := testnet.KernelAvailable("nft"); err != nil {
		t.Logf("golden not checked by the kernel: %v", err)
		return
	}
	ns := fmt.Sprintf("spgold-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "delete", ns).Run()
	// Twice: the second time nft reads the table back from the kernel
	// first, which is where nft 1.0 trips over some typeof keys.
	for i := 0; i < 2; i++ {
		if out, err := exec.Command("ip", "netns", "exec", ns, "nft", "-f", path).CombinedOutput(); err != nil {
			t.Fatalf("the kernel refuses %s (load %d): %v\n%s", path, i+1, err, out)
		}
	}
}

// TestPartialSyncTouchesOnlyTheChangedService checks what a partial sync
// sends: after one endpoint of one Service changes, the transaction names
// that Service's chains and elements and nothing of any other Service.
func TestPartialSyncTouchesOnlyTheChangedService(t *testing.T) {
	in := flows.FixtureFor(Capabilities)
	tr := plan.NewTracker(in.Config)
	tr.SetNode(in.Node)
	for _, s := range in.Slices {
		tr.SetSlice(s)
	}
	for _, s := range in.Services {
		tr.SetService(s)
	}
	fd := newFakeDataplane()
	p, ch := tr.Sync()
	fd.mustSync(t, p, ch)

	changed := in.Slices[0].DeepCopy()
	changed.Endpoints = changed.Endpoints[:len(changed.Endpoints)-1]
	tr.SetSlice(changed)
	p, ch = tr.Sync()
	if ch.Full || len(ch.Keys) == 0 {
		t.Fatalf("want a partial change, got %+v", ch)
	}
	for _, fake := range fd.fakes {
		fake.LastTransaction = nil // a family with nothing to do runs none
	}
	fd.mustSync(t, p, ch)
	owner := changed.Labels["kubernetes.io/service-name"]
	for f, fake := range fd.fakes {
		tx := fake.LastTransaction
		if tx == nil {
			continue
		}
		for _, line := range splitLines(tx.String()) {
			for _, sp := range p.PortsOf(f) {
				if sp.Name != owner && containsWord(line, portID(sp.Key)) {
					t.Errorf("partial sync for %s touched %s: %s", owner, sp.Key, line)
				}
			}
		}
	}
	if got, want := fd.dump(), fullSyncDump(t, p); got != want {
		t.Fatalf("partial sync diverged from a full sync:\n%s", lineDiff(got, want))
	}
}
