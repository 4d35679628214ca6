// Package plan decides, for one node, what every Service port must do.
//
// It is the single place where Kubernetes Service semantics live: which
// Services and addresses are handled, which endpoints serve cluster traffic
// and which local traffic (traffic policies, topology hints, the
// serving-and-terminating fallback), when a packet is masqueraded, when it is
// rejected and when dropped, session affinity and source ranges. The result is
// backend-neutral data; dataplanes only translate it into kernel objects.
//
// Each ServicePort carries its outcomes (outcome.go): for traffic to the
// ClusterIP and to its external addresses a Route (bypasses by source
// class, then a default Outcome: forward to a pool of endpoints with a
// masquerade mode, reject, or drop), the Firewall of its load-balancer
// IPs, affinity, the hairpin set, the live endpoints and the health check.
// Plan.NodePorts says which node addresses accept NodePorts, and
// Capabilities what a dataplane can write. Decide reads the same outcomes
// and is the reference every dataplane's tracer is held to.
//
// Everything here is pure: no I/O, no clocks, no goroutines.
package plan

import (
	"fmt"
	"net/netip"

	v1 "k8s.io/api/core/v1"
)

// Family is an IP family.
type Family uint8

// The IP families.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

// Families lists the IP families in a fixed order.
var Families = []Family{IPv4, IPv6}

func (f Family) String() string {
	if f == IPv6 {
		return "IPv6"
	}
	return "IPv4"
}

// FamilyOf returns the family of an address.
func FamilyOf(a netip.Addr) Family {
	if a.Is4() || a.Is4In6() {
		return IPv4
	}
	return IPv6
}

// ServicePortName names one port of one Service, as kube-proxy does.
type ServicePortName struct {
	Namespace string
	Name      string
	Port      string // the port's name; "" for a single unnamed port
	Protocol  v1.Protocol
}

// String is "namespace/name:port" ("namespace/name" for an unnamed port),
// the form kube-proxy uses in rule comments and logs.
func (n ServicePortName) String() string {
	if n.Port == "" {
		return n.Namespace + "/" + n.Name
	}
	return n.Namespace + "/" + n.Name + ":" + n.Port
}

// Key identifies one ServicePort of the plan: a Service port in one family.
type Key struct {
	ServicePortName
	Family Family
}

func (k Key) String() string { return fmt.Sprintf("%s/%s %s", k.ServicePortName, k.Protocol, k.Family) }

// Less orders keys by namespace, name, port, protocol and family.
func (k Key) Less(o Key) bool {
	if k.Namespace != o.Namespace {
		return k.Namespace < o.Namespace
	}
	if k.Name != o.Name {
		return k.Name < o.Name
	}
	if k.Port != o.Port {
		return k.Port < o.Port
	}
	if k.Protocol != o.Protocol {
		return k.Protocol < o.Protocol
	}
	return k.Family < o.Family
}

// Compare orders keys as Less does: -1, 0 or 1.
func (k Key) Compare(o Key) int {
	switch {
	case k.Less(o):
		return -1
	case o.Less(k):
		return 1
	}
	return 0
}

// Endpoint is one backend of a service port as seen from this node, with
// the conditions and hints the plan resolves the port's outcomes from.
type Endpoint struct {
	Addr        netip.AddrPort
	NodeName    string
	Zone        string
	Ready       bool
	Serving     bool
	Terminating bool
	Local       bool // runs on this node

	// Hints from the EndpointSlice controller (topology-aware routing and
	// trafficDistribution); nil when there are none, as for most endpoints.
	Hints *Hints
}

// Hints name the nodes and zones an endpoint should serve.
type Hints struct {
	ForNodes []string
	ForZones []string
}

// forNodes and forZones read the hints of an endpoint that may have none.
func (e *Endpoint) forNodes() []string {
	if e.Hints == nil {
		return nil
	}
	return e.Hints.ForNodes
}

func (e *Endpoint) forZones() []string {
	if e.Hints == nil {
		return nil
	}
	return e.Hints.ForZones
}

// ServicePort is the resolved plan for one Service port in one family: its
// addresses and, for each kind of traffic to them, the outcome (outcome.go).
// A dataplane translates the outcomes and reads nothing else; Inputs, what
// they were resolved from, are for the plan itself and for status displays.
type ServicePort struct {
	Key

	ClusterIP       netip.Addr
	Port            uint16
	NodePort        uint16 // 0: no NodePort rules
	ExternalIPs     []netip.Addr
	LoadBalancerIPs []netip.Addr // only ingress IPs with ipMode VIP (or unset)

	// Internal is what traffic to the ClusterIP gets.
	Internal Route
	// External is what traffic to the NodePort, the external IPs and the
	// load-balancer IPs gets; zero when the port has none of them.
	External Route
	// Firewall filters traffic to the load-balancer IPs by source before
	// External applies (loadBalancerSourceRanges).
	Firewall Firewall
	// AffinitySeconds pins a client to the endpoint it first got for this
	// long (sessionAffinity ClientIP); 0: no affinity.
	AffinitySeconds int32
	// Scheduler is how new connections are spread over a pool: an IPVS
	// scheduler name ("rr", "sh", ...), or "" for the dataplane's uniform
	// random choice. It is Config.Scheduler (the IPVS dataplane's global
	// --ipvs-scheduler); a per-Service annotation will override it here.
	Scheduler string
	// Hairpin holds the endpoints that may be their own client through this
	// node, sorted: a packet one of them sends that is forwarded to itself
	// is masqueraded, or the endpoint would answer itself directly. These
	// are the endpoints on this node (or on no known node) and, under
	// externalTrafficPolicy Local, every endpoint pods may reach through
	// this node's external addresses without masquerading.
	Hairpin []netip.Addr
	// HealthCheck is the health-check node port this port's Service serves
	// on this node, if any.
	HealthCheck HealthCheck
	// Live holds the endpoints still serving, ready or terminating, sorted:
	// connections to them stay; a UDP flow to any other is stale.
	Live []netip.AddrPort

	// ClusterEndpoints and LocalEndpoints are the two pools routes forward
	// to (see Pool); dataplanes reach them through Backends.
	ClusterEndpoints []netip.AddrPort
	LocalEndpoints   []netip.AddrPort

	// Inputs are what the outcomes were resolved from. No dataplane reads
	// them (policy_test.go holds them to it).
	Inputs Inputs
}

// Inputs are a port's traffic policies, topology and endpoints with their
// conditions: what the plan resolves the outcomes from, kept for the plan's
// own use and for status displays.
type Inputs struct {
	InternalLocal bool // internalTrafficPolicy: Local
	ExternalLocal bool // externalTrafficPolicy: Local, with external addresses
	// Topology says how the cluster pool was narrowed: "",
	// "PreferSameNode" or "PreferSameZone".
	Topology string
	// Endpoints holds every endpoint of the port, sorted by address.
	Endpoints []Endpoint
}

// Backends returns the endpoints of one of the port's pools, sorted; new
// connections are shared equally among them.
func (sp *ServicePort) Backends(p Pool) []netip.AddrPort {
	if p == LocalPool {
		return sp.LocalEndpoints
	}
	return sp.ClusterEndpoints
}

// HasExternal reports whether the port has any external address.
func (sp *ServicePort) HasExternal() bool {
	return sp.NodePort != 0 || len(sp.ExternalIPs) > 0 || len(sp.LoadBalancerIPs) > 0
}

// NoLocalEndpoints reports whether a Local traffic policy of the port
// finds no endpoint on this node, internal and external (kube-proxy's
// sync_proxy_rules_no_local_endpoints_total counts these).
func (sp *ServicePort) NoLocalEndpoints() (internal, external bool) {
	if len(sp.LocalEndpoints) > 0 {
		return false, false
	}
	return sp.Inputs.InternalLocal, sp.Inputs.ExternalLocal
}

// Config is what the plan needs to know about this node and the proxy's
// configuration. Dataplanes do not read it: the plan resolves it into the
// outcomes and the node-port address set (Plan.NodePorts).
type Config struct {
	// NodeName is this node's name, compared with endpoints' nodeName.
	NodeName string
	// ClusterCIDRs are the pod networks, used to tell pod traffic from other
	// traffic (detect-local-mode ClusterCIDR). Empty: no local detection.
	ClusterCIDRs []netip.Prefix
	// MasqueradeAll masquerades all traffic to ClusterIPs.
	MasqueradeAll bool
	// NodeIPs are this node's addresses.
	NodeIPs []netip.Addr
	// NodePortAddresses restricts the node addresses that accept NodePorts,
	// family by family as kube-proxy's nodePortAddresses do: a family with
	// no prefix here, or with a /0, accepts them on every local address
	// but loopback.
	NodePortAddresses []netip.Prefix
	// Scheduler is the default IPVS scheduler (--ipvs-scheduler); "" for
	// the dataplane's own default.
	Scheduler string
	// LocalhostNodePorts lets IPv4 loopback addresses accept NodePorts
	// where NodePortAddresses allows them (kube-proxy's iptables
	// localhostNodePorts; never in nftables mode, never for IPv6).
	LocalhostNodePorts bool
}

// clusterCIDRsOf returns the cluster CIDRs of one family.
func (c *Config) clusterCIDRsOf(f Family) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range c.ClusterCIDRs {
		if FamilyOf(p.Addr()) == f {
			out = append(out, p)
		}
	}
	return out
}

func containsAddr(prefixes []netip.Prefix, a netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Plan is the resolved state of one node: every handled service port.
type Plan struct {
	Config Config
	Zone   string // this node's zone, from its topology label
	Ports  map[Key]*ServicePort
}

// PortsOf returns the service ports of one family, sorted by key.
func (p *Plan) PortsOf(f Family) []*ServicePort {
	out := make([]*ServicePort, 0, len(p.Ports))
	for k, sp := range p.Ports {
		if k.Family == f {
			out = append(out, sp)
		}
	}
	sortPorts(out)
	return out
}
