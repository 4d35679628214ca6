// Package dataplane is the seam between the plan and the kernel: every
// dataplane (nftables, iptables, ...) implements Dataplane, translating the
// plan mechanically and making no policy decision of its own.
package dataplane

import (
	"context"

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
