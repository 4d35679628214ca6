// Package testnet builds throwaway network namespaces shaped like a small
// two-node cluster, for tests that need a real kernel.
//
// It owns the namespaces it creates and everything inside them: a LAN
// bridge, two routing nodes, an external client and one namespace per pod,
// all numbered from the address plan in plan.go. It never configures the
// machine's own namespace. Every namespace is named
// "<NamePrefix>-<pid>-<n>-<role>", so leftovers of a crashed run can be
// recognised and removed by Sweep.
//
// Topology (LAN interfaces are "lan0"; pod veths are "v-<pod>" on the node
// and "eth0" in the pod):
//
//	pod1a pod1b          pod2a pod2b
//	    \  /                 \  /
//	   node1 ---- lan ---- node2       lan: bridge br0
//	               |
//	              ext                  routes ExternalPool via node1
package testnet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/svcproxy/svcproxy/internal/netwire"
)

// NamePrefix starts the name of every namespace a Cluster creates.
const NamePrefix = "spt"

// Options says which pods to create.
type Options struct {
	// Pods to create, in order. Empty means DefaultPods.
	Pods []PodSpec
}

// PodSpec names a pod and the node it runs on.
type PodSpec struct {
	// Name is 1-12 characters of [a-z0-9-]: it names the pod's namespace
	// and its node-side veth ("v-<name>", within the 15 byte limit).
	Name string
	// Node is "node1" or "node2".
	Node string
}

// DefaultPods are the pods of a Cluster built without Options.Pods.
var DefaultPods = []PodSpec{
	{Name: "pod1a", Node: "node1"},
	{Name: "pod1b", Node: "node1"},
	{Name: "pod2a", Node: "node2"},
	{Name: "pod2b", Node: "node2"},
}

// Cluster is a set of namespaces wired as described in the package comment.
type Cluster struct {
	Node1, Node2, LAN, Ext *NS
	// Pods by name; PodList in Options order.
	Pods    map[string]*Pod
	PodList []*Pod

	mu      sync.Mutex
	created []*NS // namespaces that exist, in creation order
}

// Pod is one pod: a namespace with eth0 routed through its node.
type Pod struct {
	Name string
	Node string // "node1" or "node2"
	NS   *NS
	// IPv4 and IPv6 are the pod's addresses, .2/::2 onwards of its node's
	// pod CIDR.
	IPv4, IPv6 netip.Addr
}

// IPs returns the pod's addresses, IPv4 first.
func (p *Pod) IPs() []netip.Addr { return []netip.Addr{p.IPv4, p.IPv6} }

// Node returns the namespace of "node1" or "node2", nil for other names.
func (c *Cluster) Node(name string) *NS {
	switch name {
	case Node1Addrs.Name:
		return c.Node1
	case Node2Addrs.Name:
		return c.Node2
	}
	return nil
}

// Namespaces returns every namespace of the cluster: lan, nodes, ext, pods.
func (c *Cluster) Namespaces() []*NS {
	all := []*NS{c.LAN, c.Node1, c.Node2, c.Ext}
	for _, p := range c.PodList {
		all = append(all, p.NS)
	}
	return all
}

// New builds a cluster for t and removes it in t.Cleanup. It fails t if
// the cluster cannot be built, after removing what was already made.
func New(t testing.TB, opts Options) *Cluster {
	t.Helper()
	sweepOnce.Do(func() {
		if err := Sweep(NamePrefix); err != nil {
			t.Logf("sweeping old namespaces: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Build(ctx, opts)
	if err != nil {
		t.Fatalf("testnet: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("testnet: %v", err)
		}
	})
	return c
}

var (
	sweepOnce sync.Once
	clusterN  atomic.Int64
)

// Build creates the namespaces and wires them up. On error it removes
// what it made. The caller owns the cluster and must Close it.
func Build(ctx context.Context, opts Options) (*Cluster, error) {
	c, err := layout(opts, fmt.Sprintf("%s-%d-%d", NamePrefix, os.Getpid(), clusterN.Add(1)))
	if err != nil {
		return nil, err
	}
	return build(ctx, c, (*wiring).cluster)
}

// build creates c's namespaces and wires them with wire.
func build(ctx context.Context, c *Cluster, wire func(*wiring) error) (*Cluster, error) {
	if err := c.setUp(ctx, wire); err != nil {
		return nil, errors.Join(err, c.Close())
	}
	return c, nil
}

func (c *Cluster) setUp(ctx context.Context, wire func(*wiring) error) error {
	w := &wiring{c: c, open: map[*NS]*netwire.NS{}}
	defer w.close()
	for _, ns := range c.Namespaces() {
		if err := netwire.Add(ns.Name); err != nil {
			return err
		}
		c.mu.Lock()
		c.created = append(c.created, ns)
		c.mu.Unlock()
		h, err := netwire.Open(ns.Name)
		if err != nil {
			return err
		}
		w.open[ns] = h
	}
	if err := wire(w); err != nil {
		return err
	}
	return w.waitAddrs(ctx, 2*time.Second)
}

// Close deletes every namespace the cluster created. Sockets still open in
// a namespace keep it alive, nameless, until they are closed.
func (c *Cluster) Close() error {
	c.mu.Lock()
	created := c.created
	c.created = nil
	c.mu.Unlock()
	var errs []error
	for _, ns := range slices.Backward(created) {
		if err := deleteNS(ns.Name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

var podName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,11}$`)

// layout names the namespaces and numbers the pods; it changes nothing.
func layout(opts Options, base string) (*Cluster, error) {
	ns := func(role string) *NS { return &NS{Name: base + "-" + role} }
	c := &Cluster{
		Node1: ns("node1"), Node2: ns("node2"), LAN: ns("lan"), Ext: ns("ext"),
		Pods: map[string]*Pod{},
	}
	specs := opts.Pods
	if len(specs) == 0 {
		specs = DefaultPods
	}
	perNode := map[string]int{}
	for _, s := range specs {
		if err := checkPod(c, s); err != nil {
			return nil, err
		}
		na, _ := NodeAddrsOf(s.Node)
		perNode[s.Node]++
		n := perNode[s.Node] + 1 // .1 is the gateway
		if n > 250 {
			return nil, fmt.Errorf("pod %s: too many pods on %s", s.Name, s.Node)
		}
		p := &Pod{Name: s.Name, Node: s.Node, NS: ns(s.Name), IPv4: na.PodV4(n - 2), IPv6: na.PodV6(n - 2)}
		c.Pods[p.Name] = p
		c.PodList = append(c.PodList, p)
	}
	return c, nil
}

func checkPod(c *Cluster, s PodSpec) error {
	switch {
	case !podName.MatchString(s.Name):
		return fmt.Errorf("pod name %q: want 1-12 of [a-z0-9-]", s.Name)
	case slices.Contains([]string{"node1", "node2", "lan", "ext"}, s.Name):
		return fmt.Errorf("pod name %q is taken by a node namespace", s.Name)
	case c.Pods[s.Name] != nil:
		return fmt.Errorf("pod %q listed twice", s.Name)
	case c.Node(s.Node) == nil:
		return fmt.Errorf("pod %s: unknown node %q (want node1 or node2)", s.Name, s.Node)
	}
	return nil
}
