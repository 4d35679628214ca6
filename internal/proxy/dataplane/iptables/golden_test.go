package iptables

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/flows"
	"github.com/svcproxy/svcproxy/internal/testkit/testnet"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// TestGolden renders the seeds' examples, each alone, from the flow
// fixture — a ClusterIP with one endpoint ("one") and with three
// ("three"), a NodePort ("np-cluster"), externalTrafficPolicy Local
// ("lb-local"), and an SCTP ClusterIP and NodePort ("sctp") — and compares the iptables-save dump of a full sync with
// testdata/<name>.golden (go test -update rewrites them). Each golden is
// then loaded by the real iptables-restore in a throwaway namespace.
func TestGolden(t *testing.T) {
	full, errs := plan.Build(flows.FixtureFor(Capabilities))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	for _, name := range []string{"one", "three", "np-cluster", "lb-local", "sctp"} {
		t.Run(name, func(t *testing.T) {
			p := &plan.Plan{Config: full.Config, Zone: full.Zone, Ports: maps.Clone(full.Ports)}
			maps.DeleteFunc(p.Ports, func(k plan.Key, _ *plan.ServicePort) bool { return k.Name != name || k.Family != plan.IPv4 })
			if len(p.Ports) == 0 {
				t.Fatalf("no service port %s in the fixture", name)
			}
			fake := NewFake()
			if err := New(Options{Kernel: fake, Families: []plan.Family{plan.IPv4}}).Sync(context.Background(), p, plan.Changes{Full: true}); err != nil {
				t.Fatal(err)
			}
			got := fake.Dump(plan.IPv4)
			path := filepath.Join("testdata", name+".golden")
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
				t.Fatalf("%v (go test -update creates it)", err)
			}
			if got != string(want) {
				t.Fatalf("dump differs from %s (go test -update rewrites it):\n%s", path, lineDiff(got, string(want)))
			}
			loadInKernel(t, path)
		})
	}
}

// loadInKernel has the real iptables-restore load a dump in a throwaway
// namespace.
func loadInKernel(t *testing.T, path string) {
	t.Helper()
	if err := testnet.KernelAvailable("iptables-restore"); err != nil {
		t.Logf("golden not checked by the kernel: %v", err)
		return
	}
	ns := fmt.Sprintf("spiptg-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "delete", ns).Run()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("ip", "netns", "exec", ns, "iptables-restore")
	cmd.Stdin = f
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the kernel refuses %s: %v\n%s", path, err, out)
	}
}
