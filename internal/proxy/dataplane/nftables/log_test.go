package nftables

import (
	"testing"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/flows"
	"github.com/svcproxy/svcproxy/internal/testkit/logtest"
)

// TestTransactionsLoggedAtV9: at -v=9 each transaction sent with nft is
// logged, as kube-proxy logs its own; below that, nothing.
func TestTransactionsLoggedAtV9(t *testing.T) {
	p, errs := plan.Build(flows.FixtureFor(Capabilities))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	for _, v := range []int{8, 9} {
		logs := logtest.New(v)
		fd := newFakeDataplane()
		fd.opts.Log = logs.Logger()
		fd.mustSync(t, p, plan.Changes{Full: true})
		n := logs.Count("Running nftables transaction", "ipFamily=IPv4", "transaction=add table ip svcproxy")
		if v == 9 && n == 0 || v < 9 && len(logs.Lines()) > 0 {
			t.Errorf("-v=%d: logged %d IPv4 transactions: %.300q", v, n, logs.Lines())
		}
	}
}
