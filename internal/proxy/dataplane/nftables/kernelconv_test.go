package nftables

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/dptest"
	"github.com/svcproxy/svcproxy/internal/testkit/testnet"
)

// TestKernelConvergence is TestConvergence against the real kernel: random
// changes applied with partial syncs (endpoint changes going over netlink)
// in one namespace end in the same tables as one full sync of the final
// state in another. It checks the netlink encoding of elements against
// what nft itself writes.
func TestKernelConvergence(t *testing.T) {
	testnet.RequireKernel(t, "nft")
	partial, fresh := scratchNetns(t, "partial"), scratchNetns(t, "fresh")
	for seed := int64(1); seed <= 3; seed++ {
		w := newWorld(seed)
		cfg := testConfig()
		tr := plan.NewTracker(cfg)
		tr.SetNode(w.node())
		dp := New(Options{})
		for i := 0; i < 60; i++ {
			w.step(tr)
			p, ch := tr.Sync()
			if err := partial.Do(func() error { return dp.Sync(context.Background(), p, ch) }); err != nil {
				t.Fatalf("seed %d step %d: %v", seed, i, err)
			}
		}
		final, _ := plan.Build(w.input(cfg))
		dp2 := New(Options{})
		if err := fresh.Do(func() error { return dp2.Sync(context.Background(), final, plan.Changes{Full: true}) }); err != nil {
			t.Fatal(err)
		}
		got, want := kernelTables(t, partial), kernelTables(t, fresh)
		if got != want {
			t.Fatalf("seed %d: partial syncs in the kernel diverged from a full sync:\n%s", seed, lineDiff(got, want))
		}
		for _, ns := range []*testnet.NS{partial, fresh} {
			if _, err := ns.Exec(context.Background(), "nft", "flush", "ruleset"); err != nil {
				t.Fatal(err)
			}
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
	return sameGeneration(dptest.CanonicalNft(out))
}
