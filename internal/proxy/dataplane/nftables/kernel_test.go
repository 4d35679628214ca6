package nftables_test

import (
	"testing"

	"github.com/svcproxy/svcproxy/internal/proxy/dataplane"
	"github.com/svcproxy/svcproxy/internal/proxy/dataplane/nftables"
	"github.com/svcproxy/svcproxy/internal/testkit/dptest"
)

// TestKernel runs the shared dataplane suite (real traffic through network
// namespaces) against the nftables dataplane, none of whose netlink writes
// may fall back to nft. It skips unless run as root with ip and nft
// installed.
func TestKernel(t *testing.T) {
	fellBack := func(err error) { t.Errorf("a netlink write fell back to nft: %v", err) }
	dptest.Run(t, nftables.Capabilities, func() dataplane.Dataplane { return nftables.New(nftables.Options{Fallback: fellBack}) })
}
