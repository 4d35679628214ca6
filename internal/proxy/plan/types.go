// Package plan decides, for one node, what every Service port must do.
//
// It is the single place where Kubernetes Service semantics live: which
// Services and addresses are handled, which endpoints serve cluster traffic
// and which local traffic (traffic policies, topology hints, the
// serving-and-terminating fallback), when a packet is masqueraded, when it is
// rejected and when dropped, session affinity and source ranges. The result is
// backend-neutral data; dataplanes only translate it into kernel objects.
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

// Endpoint is one backend of a service port as seen from this node.
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

// ServicePort is the resolved plan for one Service port in one family:
// its addresses and, for each kind of traffic, the endpoints it may use.
type ServicePort struct {
	Key

	ClusterIP       netip.Addr
	Port            uint16
	NodePort        uint16 // 0: no NodePort rules
	ExternalIPs     []netip.Addr
	LoadBalancerIPs []netip.Addr   // only ingress IPs with ipMode VIP (or unset)
	SourceRanges    []netip.Prefix // loadBalancerSourceRanges of this family; empty allows all

	InternalLocal       bool   // internalTrafficPolicy: Local
	ExternalLocal       bool   // externalTrafficPolicy: Local
	HealthCheckNodePort uint16 // for externalTrafficPolicy: Local
	AffinitySeconds     int32  // sessionAffinity ClientIP timeout; 0: no affinity

	// Endpoints holds every endpoint of the port, sorted by address, for
	// status and for conntrack cleanup.
	Endpoints []Endpoint
	// ClusterEndpoints serve traffic under the Cluster policy: ready
	// endpoints narrowed by topology, else serving+terminating ones.
	ClusterEndpoints []netip.AddrPort
	// LocalEndpoints serve traffic under the Local policy: local ready
	// endpoints, else local serving+terminating ones.
	LocalEndpoints []netip.AddrPort
	// Topology says how ClusterEndpoints were narrowed: "", "PreferSameNode"
	// or "PreferSameZone".
	Topology string
}

// HasEndpoints reports whether the port has any usable endpoint anywhere in
// the cluster. Without one, all its traffic is rejected; with one but none
// for a Local policy, that traffic is dropped.
func (sp *ServicePort) HasEndpoints() bool { return len(sp.ClusterEndpoints) > 0 }

// InternalEndpoints are the endpoints for traffic to the ClusterIP.
func (sp *ServicePort) InternalEndpoints() []netip.AddrPort {
	if sp.InternalLocal {
		return sp.LocalEndpoints
	}
	return sp.ClusterEndpoints
}

// ExternalEndpoints are the endpoints for traffic to a NodePort, an external
// IP or a load-balancer IP that comes from outside the cluster.
func (sp *ServicePort) ExternalEndpoints() []netip.AddrPort {
	if sp.ExternalLocal {
		return sp.LocalEndpoints
	}
	return sp.ClusterEndpoints
}

// HasExternal reports whether the port has any external address.
func (sp *ServicePort) HasExternal() bool {
	return sp.NodePort != 0 || len(sp.ExternalIPs) > 0 || len(sp.LoadBalancerIPs) > 0
}

// UsesLocal reports whether any traffic policy of the port is Local.
func (sp *ServicePort) UsesLocal() bool {
	return sp.InternalLocal || (sp.ExternalLocal && sp.HasExternal())
}

// Config is what the plan needs to know about this node and the proxy's
// configuration.
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
	// LocalhostNodePorts lets IPv4 loopback addresses accept NodePorts
	// where NodePortAddresses allows them (kube-proxy's iptables
	// localhostNodePorts; never in nftables mode, never for IPv6).
	LocalhostNodePorts bool
}

// ClusterCIDRsOf returns the cluster CIDRs of one family.
func (c *Config) ClusterCIDRsOf(f Family) []netip.Prefix {
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
