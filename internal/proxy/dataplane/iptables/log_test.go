package iptables

import (
	"context"
	"testing"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/flows"
	"github.com/svcproxy/svcproxy/internal/testkit/logtest"
)

// TestRestoreInputLoggedAtV9: at -v=9 each iptables-restore input is
// logged, as kube-proxy logs its own; below that, nothing.
func TestRestoreInputLoggedAtV9(t *testing.T) {
	p, errs := plan.Build(flows.FixtureFor(Capabilities))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	for _, v := range []int{8, 9} {
		logs := logtest.New(v)
		fake := NewFake()
		if err := New(Options{Kernel: fake, Log: logs.Logger()}).Sync(context.Background(), p, plan.Changes{Full: true}); err != nil {
			t.Fatal(err)
		}
		n := logs.Count("Running iptables-restore", "ipFamily=IPv4", "input=*filter")
		if v == 9 && n == 0 || v < 9 && len(logs.Lines()) > 0 {
			t.Errorf("-v=%d: logged %d IPv4 inputs: %.300q", v, n, logs.Lines())
		}
	}
}
