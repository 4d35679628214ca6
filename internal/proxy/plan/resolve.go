package plan

import (
	"net/netip"
	"slices"
)

// resolve works out, once a port's pools are set, what each kind of
// traffic to it gets, which endpoints need hairpin masquerading, which
// still serve, and what its health check counts. Every dataplane reads
// these outcomes; nothing downstream looks at the policies again.
func resolve(sp *ServicePort, cfg *Config, scheduler Scheduling) {
	pods := cfg.clusterCIDRsOf(sp.Family)
	sp.Internal = internalRoute(sp, cfg.MasqueradeAll, pods)
	if sp.HasExternal() {
		sp.External = externalRoute(sp, pods)
	}
	sp.Scheduler, sp.Scheduling = resolveScheduler(scheduler.Chosen, scheduler.From, &cfg.Dataplane)
	sp.Hairpin = hairpinSet(sp)
	sp.Live = liveEndpoints(sp)
	if sp.HealthCheck.NodePort != 0 {
		sp.HealthCheck.LocalEndpoints = localReady(sp.Inputs.Endpoints)
	}
}

var (
	noEndpoints = Outcome{Action: Reject, Why: "service has no endpoints"}
	masqAlways  = Masquerade{Mode: MasqAlways}
)

// internalRoute: traffic to the ClusterIP follows internalTrafficPolicy,
// and is masqueraded when it does not come from the pod network (replies
// must come back through this node), or always with masqueradeAll.
func internalRoute(sp *ServicePort, masqueradeAll bool, pods []netip.Prefix) Route {
	switch {
	case len(sp.ClusterEndpoints) == 0:
		return Route{Default: noEndpoints}
	case sp.Inputs.InternalLocal && len(sp.LocalEndpoints) == 0:
		return Route{Default: Outcome{Action: Drop, Why: "internalTrafficPolicy Local and no local endpoint on this node"}}
	}
	o := Outcome{Action: Forward, Pool: ClusterPool, Why: "cluster IP"}
	if sp.Inputs.InternalLocal {
		o.Pool, o.Why = LocalPool, "cluster IP, internalTrafficPolicy Local"
	}
	switch {
	case masqueradeAll:
		o.Masquerade, o.Why = masqAlways, o.Why+", masqueradeAll"
	case len(pods) > 0:
		o.Masquerade = Masquerade{Mode: MasqUnlessFrom, Except: pods}
	}
	return Route{Default: o}
}

// externalRoute: traffic to the NodePort, external and load-balancer IPs
// follows externalTrafficPolicy. Cluster: every endpoint, masqueraded, as
// the endpoint may be on another node. Local: this node's endpoints, the
// client's address kept; but pods, then the node itself, use every
// endpoint, as if they had gone out to the load balancer and come back
// (kube-proxy's order), the node's traffic masqueraded since its source is
// the node's address.
func externalRoute(sp *ServicePort, pods []netip.Prefix) Route {
	if len(sp.ClusterEndpoints) == 0 {
		return Route{Default: noEndpoints}
	}
	if !sp.Inputs.ExternalLocal {
		return Route{Default: Outcome{Action: Forward, Pool: ClusterPool, Masquerade: masqAlways,
			Why: "externalTrafficPolicy Cluster: masqueraded, so that replies come back through this node (the endpoint may be on another)"}}
	}
	var r Route
	if len(pods) > 0 {
		r.Bypasses = append(r.Bypasses, Bypass{From: Sources{Prefixes: pods},
			Outcome: Outcome{Action: Forward, Pool: ClusterPool, Why: "from a pod uses cluster endpoints"}})
	}
	r.Bypasses = append(r.Bypasses, Bypass{From: Sources{Node: true},
		Outcome: Outcome{Action: Forward, Pool: ClusterPool, Masquerade: masqAlways, Why: "from this node uses cluster endpoints, masqueraded"}})
	r.Default = Outcome{Action: Drop, Why: "externalTrafficPolicy Local and no local endpoint on this node"}
	if len(sp.LocalEndpoints) > 0 {
		r.Default = Outcome{Action: Forward, Pool: LocalPool, Why: "externalTrafficPolicy Local keeps the client IP"}
	}
	return r
}

// hairpinSet returns the endpoints that may be their own client through
// this node: of the pools traffic is forwarded to, the endpoints on this
// node (or on no known node) and, under externalTrafficPolicy Local, all of
// them, since a pod on another node may reach itself through this node's
// NodePort without being masqueraded. Other pods' Service traffic never
// crosses this node, so the set stays small.
func hairpinSet(sp *ServicePort) []netip.Addr {
	mayBeLocal := map[netip.AddrPort]bool{}
	for _, e := range sp.Inputs.Endpoints {
		if e.Local || e.NodeName == "" {
			mayBeLocal[e.Addr] = true
		}
	}
	var out []netip.Addr
	for _, pool := range append(sp.Internal.Pools(), sp.External.Pools()...) {
		for _, e := range sp.Backends(pool) {
			if sp.Inputs.ExternalLocal || mayBeLocal[e] {
				out = append(out, e.Addr())
			}
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// liveEndpoints are the serving endpoints: ready ones and those still
// serving while terminating, which the fallback may use. Their flows stay.
// It shares the cluster pool when it is the same list, as it usually is.
func liveEndpoints(sp *ServicePort) []netip.AddrPort {
	live := filter(sp.Inputs.Endpoints, func(e Endpoint) bool { return e.Serving })
	if len(live) == len(sp.ClusterEndpoints) && slices.EqualFunc(live, sp.ClusterEndpoints, func(e Endpoint, a netip.AddrPort) bool { return e.Addr == a }) {
		return sp.ClusterEndpoints
	}
	return addrs(live)
}

// localReady returns the distinct addresses of this node's ready endpoints.
func localReady(eps []Endpoint) []netip.Addr {
	var out []netip.Addr
	for _, e := range eps {
		if e.Local && e.Ready {
			out = append(out, e.Addr.Addr())
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}
