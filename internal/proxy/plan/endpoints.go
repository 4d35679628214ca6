package plan

import (
	"net/netip"
	"slices"
	"sort"
)

// Topology modes, named as the trafficDistribution values that lead to them.
const (
	TopologySameNode = "PreferSameNode"
	TopologySameZone = "PreferSameZone"
)

// setEndpoints resolves which endpoints cluster and local traffic use.
func setEndpoints(sp *ServicePort, eps []Endpoint, node nodeInfo) {
	in := &sp.Inputs
	in.Endpoints = eps
	ready := filter(eps, func(e Endpoint) bool { return e.Ready })
	in.Topology = topologyMode(ready, node)
	sp.ClusterEndpoints = addrs(filter(ready, func(e Endpoint) bool { return fitsTopology(e, in.Topology, node) }))
	if len(sp.ClusterEndpoints) == 0 {
		// No ready endpoint anywhere: keep traffic flowing to endpoints that
		// still serve while terminating, ignoring topology.
		in.Topology = ""
		sp.ClusterEndpoints = addrs(filter(eps, servingTerminating))
	}
	if !in.InternalLocal && !in.ExternalLocal {
		return
	}
	local := filter(eps, func(e Endpoint) bool { return e.Local && e.Ready })
	if len(local) == 0 {
		local = filter(eps, func(e Endpoint) bool { return e.Local && servingTerminating(e) })
	}
	sp.LocalEndpoints = addrs(local)
}

func servingTerminating(e Endpoint) bool { return e.Serving && e.Terminating }

// topologyMode decides whether cluster traffic is narrowed: to this node
// when every ready endpoint has a node hint and one names this node, else to
// this zone when every ready endpoint has a zone hint and one names this
// node's zone, else not at all.
func topologyMode(ready []Endpoint, node nodeInfo) string {
	if len(ready) == 0 {
		return ""
	}
	allNode, anyNode, allZone, anyZone := true, false, true, false
	for _, e := range ready {
		allNode = allNode && len(e.forNodes()) > 0
		anyNode = anyNode || (node.name != "" && slices.Contains(e.forNodes(), node.name))
		allZone = allZone && len(e.forZones()) > 0
		anyZone = anyZone || (node.zone != "" && slices.Contains(e.forZones(), node.zone))
	}
	switch {
	case allNode && anyNode:
		return TopologySameNode
	case allZone && anyZone:
		return TopologySameZone
	}
	return ""
}

func fitsTopology(e Endpoint, mode string, node nodeInfo) bool {
	switch mode {
	case TopologySameNode:
		return slices.Contains(e.forNodes(), node.name)
	case TopologySameZone:
		return slices.Contains(e.forZones(), node.zone)
	}
	return true
}

// filter returns the endpoints keep accepts, sharing eps when it accepts
// all (callers only read the result), else in one exact allocation: at
// 100,000 endpoints, growing by append was the plan's largest allocation.
func filter(eps []Endpoint, keep func(Endpoint) bool) []Endpoint {
	n := 0
	for _, e := range eps {
		if keep(e) {
			n++
		}
	}
	switch n {
	case 0:
		return nil
	case len(eps):
		return eps
	}
	out := make([]Endpoint, 0, n)
	for _, e := range eps {
		if keep(e) {
			out = append(out, e)
		}
	}
	return out
}

func addrs(eps []Endpoint) []netip.AddrPort {
	if len(eps) == 0 {
		return nil
	}
	out := make([]netip.AddrPort, len(eps))
	for i, e := range eps {
		out[i] = e.Addr
	}
	return out
}

func sortPorts(ports []*ServicePort) {
	sort.Slice(ports, func(i, j int) bool { return ports[i].Key.Less(ports[j].Key) })
}
