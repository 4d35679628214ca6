package nftables

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/testnet"
)

// TestKernelConvergence is TestConvergence against the real kernel: random
// changes applied with partial syncs (endpoint changes going over netlink)
// in one namespace end in the same tables as one full sync of the final
// state written only by `nft -f` in another. That checks the netlink
// encoding of elements against what nft itself writes. No write falls
// back from netlink to nft on the way.
func TestKernelConvergence(t *testing.T) {
	testnet.RequireKernel(t, "nft")
	partial, fresh := scratchNetns(t, "partial"), scratchNetns(t, "fresh")
	sent := map[plan.Family]int{} // netlink batches
	for seed := int64(1); seed <= 3; seed++ {
		var fallbacks []string
		dp := New(Options{Fallback: func(err error) { fallbacks = append(fallbacks, err.Error()) }})
		w := converge(t, seed, partial, dp)
		for _, f := range dp.families {
			sent[f.fam] += f.elements.sent
		}
		if len(fallbacks) > 0 {
			t.Errorf("seed %d: %d writes fell back from netlink to nft:\n%s", seed, len(fallbacks), strings.Join(fallbacks, "\n"))
		}
		compareWithNft(t, seed, w, partial, fresh)
	}
	t.Logf("netlink batches: %v", sent)
	for _, f := range plan.Families {
		if sent[f] == 0 {
			t.Errorf("%s: no element went over netlink", f)
		}
	}
}

// TestKernelNetlinkFallback makes every netlink write fail (it names a
// table that does not exist): each one is reported to Options.Fallback,
// and nft writes the same table instead.
func TestKernelNetlinkFallback(t *testing.T) {
	testnet.RequireKernel(t, "nft")
	partial, fresh := scratchNetns(t, "partial"), scratchNetns(t, "fresh")
	var fallbacks []string
	dp := New(Options{Fallback: func(err error) { fallbacks = append(fallbacks, err.Error()) }})
	for _, f := range dp.families {
		f.elements.table = "no-such-table"
	}
	w := converge(t, 1, partial, dp)
	if len(fallbacks) == 0 {
		t.Fatal("netlink failed on every write, and no fallback was reported")
	}
	for _, msg := range fallbacks {
		if !strings.Contains(msg, "netlink") || !strings.Contains(msg, "nft writes it instead") {
			t.Errorf("fallback report %q does not say netlink failed and nft wrote instead", msg)
		}
	}
	t.Logf("%d fallbacks, the first: %s", len(fallbacks), fallbacks[0])
	compareWithNft(t, 1, w, partial, fresh)
}

// converge applies 60 random changes of world seed to ns with dp, each as
// the tracker's partial sync (the first is full), and returns the world.
func converge(t *testing.T, seed int64, ns *testnet.NS, dp *Dataplane) *world {
	t.Helper()
	w := newWorld(seed)
	tr := plan.NewTracker(testConfig())
	tr.SetNode(w.node())
	for i := range 60 {
		w.step(tr)
		p, ch := syncValid(t, tr)
		if err := ns.Do(func() error { return dp.Sync(context.Background(), p, ch) }); err != nil {
			t.Fatalf("seed %d step %d: %v", seed, i, err)
		}
	}
	return w
}

// compareWithNft writes the world's final state with one full sync through
// nft alone (no netlink, for listing or elements) in fresh, requires
// partial's tables to be the same, then empties both namespaces.
func compareWithNft(t *testing.T, seed int64, w *world, partial, fresh *testnet.NS) {
	t.Helper()
	final, _ := plan.Build(w.input(testConfig()))
	nftOnly := New(Options{NewInterface: func(f knftables.Family, table string) (knftables.Interface, error) {
		return knftables.New(f, table)
	}})
	if err := fresh.Do(func() error { return nftOnly.Sync(context.Background(), final, plan.Changes{Full: true}) }); err != nil {
		t.Fatal(err)
	}
	got, want := kernelTables(t, partial), kernelTables(t, fresh)
	if got != want {
		t.Fatalf("seed %d: partial syncs in the kernel diverged from a full sync by nft:\n%s", seed, lineDiff(got, want))
	}
	for _, ns := range []*testnet.NS{partial, fresh} {
		if _, err := ns.Exec(context.Background(), "nft", "flush", "ruleset"); err != nil {
			t.Fatal(err)
		}
	}
}

// scratchNetns makes an empty network namespace, removed after the test.
func scratchNetns(t *testing.T, what string) *testnet.NS {
	name := fmt.Sprintf("spconv-%d-%s", os.Getpid(), what)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", name).Run() })
	return &testnet.NS{Name: name}
}

// kernelTables lists both svcproxy tables as the kernel has them, in a
// canonical order and with the endpoint maps' generation blanked out.
func kernelTables(t *testing.T, ns *testnet.NS) string {
	out, err := ns.Exec(context.Background(), "nft", "list", "ruleset")
	if err != nil {
		t.Fatal(err)
	}
	c, err := CanonicalListing(out)
	if err != nil {
		t.Fatal(err)
	}
	return sameGeneration(c)
}
