package iptables

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/flows"
)

// TestRealRestore syncs the flow fixture with the real iptables-restore in
// a throwaway netns, checks the seeds' chains are listed, then cleans up.
func TestRealRestore(t *testing.T) {
	if _, err := exec.LookPath("iptables-nft-restore"); err != nil || os.Geteuid() != 0 {
		t.Skip("needs root and iptables")
	}
	ns := fmt.Sprintf("spipt-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "delete", ns).Run()
	run := func(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
		return execRun(ctx, stdin, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
	}
	p, errs := plan.Build(flows.FixtureFor(Capabilities))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	d := New(Options{Kernel: Binaries("nft", run)})
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if err := d.Sync(ctx, p, plan.Changes{Full: true}); err != nil {
			t.Fatalf("sync %d: %v", i, err)
		}
	}
	out, err := run(ctx, nil, "iptables", "-t", "nat", "-L", chainServices, "-n")
	if err != nil || !strings.Contains(string(out), "KUBE-SVC-") || !strings.Contains(string(out), chainNodePorts) {
		t.Fatalf("KUBE-SERVICES: %v\n%s", err, out)
	}
	t.Logf("%s", out)
	three := plan.Key{ServicePortName: plan.ServicePortName{Namespace: flows.Namespace, Name: "three", Protocol: "TCP"}}
	for _, chain := range []string{chainNodePorts, portChain(prefixSVC, three)} {
		out, err := run(ctx, nil, "iptables", "-t", "nat", "-L", chain, "-n")
		if err != nil || !strings.Contains(string(out), "KUBE-") {
			t.Fatalf("%s: %v\n%s", chain, err, out)
		}
		t.Logf("%s", out)
	}
	if err := d.Cleanup(ctx); err != nil {
		t.Fatalf("cleanup: %v", err)
	}
	out, _ = run(ctx, nil, "iptables-nft-save")
	if strings.Contains(string(out), "KUBE-") {
		t.Fatalf("cleanup left rules:\n%s", out)
	}
}
