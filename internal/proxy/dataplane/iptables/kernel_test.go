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
// dataplane; the dump is our chains of iptables-save and ip6tables-save.
func TestKernel(t *testing.T) {
	dptest.RunOptions(t, dptest.Options{
		New: func() dataplane.Dataplane { return iptables.New(iptables.Options{}) },
		Dump: func(ctx context.Context, node *testnet.NS) (string, error) {
			var out string
			for _, bin := range []string{"iptables-save", "ip6tables-save"} {
				s, err := node.Exec(ctx, bin)
				if err != nil {
					return "", err
				}
				out += bin + "\n" + iptables.CanonicalSave(s) + "\n"
			}
			return out, nil
		},
	})
}
