package iptables_test

import (
	"context"
	"testing"

	"github.com/svcproxy/svcproxy/internal/proxy/dataplane"
	"github.com/svcproxy/svcproxy/internal/proxy/dataplane/iptables"
	"github.com/svcproxy/svcproxy/internal/testkit/dptest"
	"github.com/svcproxy/svcproxy/internal/testkit/testnet"
)

// TestKernel runs the shared dataplane suite against the iptables
// dataplane, once with each iptables back end: nf_tables
// (iptables-nft-restore) and the legacy x_tables one
// (iptables-legacy-restore), as a node may run either. The dump is our
// chains of that back end's iptables-save and ip6tables-save.
func TestKernel(t *testing.T) {
	for _, backend := range []string{"nft", "legacy"} {
		t.Run(backend, func(t *testing.T) {
			testnet.RequireKernel(t, "iptables-"+backend+"-restore", "ip6tables-"+backend+"-restore")
			dptest.RunOptions(t, dptest.Options{
				New:          func() dataplane.Dataplane { return iptables.New(iptables.Options{Backend: backend}) },
				Capabilities: iptables.Capabilities,
				Dump: func(ctx context.Context, node *testnet.NS) (string, error) {
					var out string
					for _, bin := range []string{"iptables-" + backend + "-save", "ip6tables-" + backend + "-save"} {
						s, err := node.Exec(ctx, bin)
						if err != nil {
							return "", err
						}
						out += bin + "\n" + iptables.CanonicalSave(s) + "\n"
					}
					return out, nil
				},
			})
		})
	}
}
