package ipvs

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/svcproxy/svcproxy/internal/proxy/dataplane"
	"github.com/svcproxy/svcproxy/internal/proxy/dataplane/iptables"
	"github.com/svcproxy/svcproxy/internal/testkit/dptest"
	"github.com/svcproxy/svcproxy/internal/testkit/testnet"
)

// TestDataplaneKernel runs the shared dataplane suite against the IPVS
// dataplane, its glue written with iptables-nft. The dump is the kernel
// layer's (virtual servers, kube-ipvs0's addresses, sets) and the glue's
// chains of both families.
func TestDataplaneKernel(t *testing.T) {
	testnet.RequireKernel(t, "iptables-nft-save", "ip6tables-nft-save")
	dptest.RunOptions(t, dptest.Options{
		New: func() dataplane.Dataplane {
			return NewDataplane(DataplaneOptions{IPTables: iptables.Binaries("nft", nil)})
		},
		Dump: dumpNode,
	})
}

// dumpNode dumps what the dataplane owns in node.
func dumpNode(ctx context.Context, node *testnet.NS) (string, error) {
	k := NewNetlink(Options{NetNS: "/run/netns/" + node.Name})
	defer k.Close()
	out, err := k.Dump(ctx)
	if err != nil {
		return "", err
	}
	for _, bin := range []string{"iptables-nft-save", "ip6tables-nft-save"} {
		s, err := node.Exec(ctx, bin)
		if err != nil {
			return "", err
		}
		out += bin + "\n" + canonicalGlue(s)
	}
	return out, nil
}

// canonicalGlue is the glue's chains of an iptables-save dump, sorted, and
// the jumps into them; counters and other chains are left out.
func canonicalGlue(save string) string {
	var b strings.Builder
	tables := iptables.ParseSave(save)
	for _, name := range slices.Sorted(maps.Keys(tables)) {
		t := tables[name]
		for _, c := range slices.Sorted(slices.Values(t.Order)) {
			for _, r := range t.Chains[c].Rules {
				if isGlueChain(c) || isGlueChain(jumpTarget(r)) {
					b.WriteString(name + " -A " + c + " " + r + "\n")
				}
			}
			if isGlueChain(c) && len(t.Chains[c].Rules) == 0 {
				b.WriteString(name + " :" + c + "\n")
			}
		}
	}
	return b.String()
}
