// Package dataplane is the seam between the plan and the kernel: every
// dataplane (nftables, iptables, ...) implements Dataplane, translating the
// plan mechanically and making no policy decision of its own.
//
// A dataplane reads the plan's outcomes: for each service port its routes
// (plan.Route: bypasses by source class, then a default outcome that
// forwards to a pool, rejects or drops, with its masquerading), its pools
// (ServicePort.Backends), firewall, affinity and hairpin set, and the
// node's NodePort addresses (Plan.NodePorts); it declares what it can
// write as plan.Capabilities. It never reads the plan's inputs (traffic
// policies, topology, endpoint conditions, cluster CIDRs): translate_test.go
// fails the build of any dataplane that does. Its tracer is this package's
// Trace over its own Rules (which chains a hook runs, what one rule
// matches and does); the shared flow table (internal/testkit/flows) holds
// the traces to the plan. Package classes is the smallest example.
package dataplane

import (
	"context"
	"time"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// Dataplane programs a node's kernel from a plan.
type Dataplane interface {
	// Sync makes the kernel match the plan. With ch.Full it rewrites
	// everything it owns; otherwise only the service ports in ch.Keys. After
	// a failed Sync the next one is full, whatever ch says.
	Sync(ctx context.Context, p *plan.Plan, ch plan.Changes) error
	// Cleanup removes everything this dataplane ever installed.
	Cleanup(ctx context.Context) error
}

// Rechecker is a dataplane that asks for another sync a while after one,
// even without changes: the IPVS dataplane deletes the real servers it
// drained once their connections are gone.
type Rechecker interface {
	// RecheckAfter is how soon after the last sync to sync again; 0: no
	// need.
	RecheckAfter() time.Duration
}
