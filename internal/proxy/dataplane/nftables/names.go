package nftables

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"strings"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// Names of the table's fixed objects. The table name and the base chains'
// hooks and priorities are public contract; everything else may change.
const (
	DefaultTable = "svcproxy"

	// Base chains.
	chainFilterPrerouting = "filter-prerouting"
	chainFilterOutput     = "filter-output"
	chainNatPrerouting    = "nat-prerouting"
	chainNatOutput        = "nat-output"
	chainNatPostrouting   = "nat-postrouting"
	chainFilterInput      = "filter-input"
	chainFilterForward    = "filter-forward"
	chainFilterOutputPost = "filter-output-post-dnat"

	// Regular fixed chains.
	chainFirewallCheck  = "firewall-check"
	chainServices       = "services"
	chainNodePorts      = "nodeports"
	chainEndpointsCheck = "endpoints-check"
	chainMarkMasq       = "mark-for-masquerade"
	chainMasquerading   = "masquerading"
	chainReject         = "reject-chain"

	// Maps and sets.
	mapServiceIPs        = "service-ips"
	mapServiceNodePorts  = "service-nodeports"
	mapNoEndpointIPs     = "no-endpoint-services"
	mapNoEndpointNodePts = "no-endpoint-nodeports"
	mapFirewallIPs       = "firewall-ips"
	setClusterIPs        = "cluster-ips"
	setNodePortIPs       = "nodeport-ips"
	setHairpin           = "hairpin"

	// Shared endpoint maps (base names): destination . index -> endpoint.
	mapEndpoints                = "endpoints"                  // ClusterIP, external and LB IPs
	mapClusterEndpoints         = "cluster-endpoints"          // external IPs, Local policy, from pods and the node
	mapNodePortEndpoints        = "nodeport-endpoints"         // NodePorts
	mapNodePortClusterEndpoints = "nodeport-cluster-endpoints" // NodePorts, Local policy, from pods and the node
)

// Prefixes of per-service-port chains and sets.
const (
	prefixService  = "svc-"      // traffic to the ClusterIP
	prefixExternal = "ext-"      // traffic to NodePort, external and LB IPs
	prefixNodePort = "np-"       // traffic to the NodePort
	prefixBalance  = "lb-"       // shared: look up a random endpoint and DNAT
	prefixFirewall = "fw-"       // loadBalancerSourceRanges
	prefixEndpoint = "ep-"       // one endpoint, with session affinity
	prefixAffinity = "affinity-" // clients pinned to one endpoint
)

// portID is the stable, unique, rule-safe identity of a service port: a hash
// of its key followed by a readable (sanitized) name, e.g.
// "4NIQ26WE-default/foo/tcp/https".
func portID(k plan.Key) string {
	sum := sha256.Sum256([]byte(k.String()))
	h := base32.StdEncoding.EncodeToString(sum[:])[:8]
	port := k.Port
	if port == "" {
		port = "-"
	}
	return h + "-" + safe(k.Namespace, 63) + "/" + safe(k.Name, 63) + "/" + strings.ToLower(safe(string(k.Protocol), 4)) + "/" + safe(port, 15)
}

// endpointID names an endpoint inside a port's chains.
func endpointID(port string, ep netip.AddrPort) string {
	sum := sha256.Sum256([]byte(port + "|" + ep.String()))
	return port[:8] + "-" + base32.StdEncoding.EncodeToString(sum[:])[:8]
}

// safe keeps only characters that are plain identifier characters in nft
// syntax and truncates. The plan validates names already; this is the second
// line of defence that keeps API strings from ever becoming rule syntax.
func safe(s string, max int) string {
	var b strings.Builder
	for _, c := range s {
		if b.Len() >= max {
			break
		}
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '.':
			b.WriteRune(c)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// comment is the element comment naming the service port, as in kube-proxy
// ("namespace/name:port"), made safe for nft's quoted strings.
func comment(k plan.Key) *string {
	c := safe(k.Namespace, 63) + "/" + safe(k.Name, 63)
	if k.Port != "" {
		c += ":" + safe(k.Port, 15)
	}
	return &c
}

// endpointMap is one of the shared endpoint maps. There is one per base,
// protocol and generation: a full sync fills the other generation's maps
// first, outside the transaction, and its transaction switches to them.
type endpointMap struct {
	base   string
	proto  string
	byPort bool // keyed by NodePort . index, not address . port . index
}

var endpointMapList = func() []endpointMap {
	var out []endpointMap
	for _, proto := range []string{"tcp", "udp", "sctp"} {
		out = append(out,
			endpointMap{mapEndpoints, proto, false}, endpointMap{mapClusterEndpoints, proto, false},
			endpointMap{mapNodePortEndpoints, proto, true}, endpointMap{mapNodePortClusterEndpoints, proto, true})
	}
	return out
}()

func endpointMapName(base, proto string, gen int) string {
	return fmt.Sprintf("%s-%s-g%d", base, proto, gen)
}

func (m endpointMap) name(gen int) string { return endpointMapName(m.base, m.proto, gen) }
