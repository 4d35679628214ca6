package ipvs

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"strings"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// The dataplane's translation of the plan, kube-proxy's IPVS-mode layout:
//
//   - every ClusterIP is bound to kube-ipvs0, so the node takes its
//     packets in (LOCAL_IN, where IPVS hooks); packets to the Service
//     ports of external and load-balancer IPs get the local mark in mangle
//     and a policy route takes them in (State.LocalMark), so that their
//     other ports still lead where they did (kube-proxy binds these too,
//     and rejects every other port);
//   - traffic a route forwards by default meets a virtual server at the
//     Service address and port (one per node-port address for NodePorts),
//     whose real servers are the pool's endpoints;
//   - traffic a bypass forwards (externalTrafficPolicy Local: pods and the
//     node itself use every endpoint) is marked in nat KUBE-SERVICES with a
//     firewall mark of its own, which a firewall-mark virtual server takes
//     before the address's one;
//   - masquerading, hairpin, rejects, drops and source ranges are iptables
//     rules over ipsets, so that a Service change touches sets, not rules.

// portState is what one service port contributes to a family's State and
// glue.
type portState struct {
	services  []VirtualServer
	addresses []netip.Addr
	entries   map[string][]Entry // by set base name
	bypass    []string           // nat KUBE-EXTERNAL-BYPASS rules
	// internalMasq is the masquerading of the ClusterIP's traffic when
	// it is forwarded; nil otherwise.
	internalMasq *plan.Masquerade
}

// The sets, by their IPv4 names (setName gives the IPv6 ones).
const (
	setClusterIP    = "KUBE-CLUSTER-IP"                // ClusterIP,proto:port forwarded
	setExternalIP   = "KUBE-EXTERNAL-IP"               // external IP,proto:port forwarded and masqueraded
	setLoadBalancer = "KUBE-LOAD-BALANCER"             // LB IP,proto:port forwarded and masqueraded
	setNodePortTCP  = "KUBE-NODE-PORT-TCP"             // node ports forwarded and masqueraded
	setNodePortUDP  = "KUBE-NODE-PORT-UDP"             //
	setNodePortSCTP = "KUBE-NODE-PORT-SCTP-HASH"       // node IP,sctp:port: bitmap:port matches only TCP and UDP ports
	setLBFirewall   = "KUBE-LOAD-BALANCER-FW"          // LB IP,proto:port with source ranges
	setLBSourceCIDR = "KUBE-LOAD-BALANCER-SOURCE-CIDR" // LB IP,proto:port,allowed source
	setLoopBack     = "KUBE-LOOP-BACK"                 // endpoint,proto:port,endpoint: hairpin
	setReject       = "KUBE-IPVS-REJECT"               // address,proto:port rejected
	setDrop         = "KUBE-IPVS-DROP"                 // address,proto:port dropped
	setExternal     = "KUBE-IPVS-EXTERNAL"             // external and LB IP,proto:port: taken in locally
)

// setTypes are the sets every family has, with their types.
var setTypes = map[string]SetType{
	setClusterIP: HashIPPort, setExternalIP: HashIPPort, setLoadBalancer: HashIPPort,
	setNodePortTCP: BitmapPort, setNodePortUDP: BitmapPort, setNodePortSCTP: HashIPPort,
	setLBFirewall: HashIPPort, setLBSourceCIDR: HashIPPortNet, setLoopBack: HashIPPortIP,
	setReject: HashIPPort, setDrop: HashIPPort, setExternal: HashIPPort,
}

// setName is a set's name in family f: kube-proxy's IPv6 sets are
// "KUBE-6-...", cut to ipset's 31 bytes.
func setName(f plan.Family, base string) string {
	if f == plan.IPv4 {
		return base
	}
	name := "KUBE-6-" + strings.TrimPrefix(base, "KUBE-")
	return name[:min(len(name), 31)]
}

var nodePortSet = map[Protocol]string{TCP: setNodePortTCP, UDP: setNodePortUDP, SCTP: setNodePortSCTP}

// renderer translates the service ports of one family; it decides nothing.
type renderer struct {
	fam plan.Family
	// nodePortAddrs are the addresses that accept NodePorts.
	nodePortAddrs []netip.Addr
	marks         *markAllocator
}

func protocolOf(k plan.Key) Protocol {
	switch strings.ToUpper(string(k.Protocol)) {
	case "UDP":
		return UDP
	case "SCTP":
		return SCTP
	}
	return TCP
}

func (r *renderer) port(sp *plan.ServicePort) (*portState, error) {
	ps := &portState{entries: map[string][]Entry{}}
	proto := protocolOf(sp.Key)
	what := sp.ServicePortName.String()
	ps.addresses = []netip.Addr{sp.ClusterIP}
	in := sp.Internal.Default
	cip := Entry{IP: sp.ClusterIP, Protocol: proto, Port: sp.Port, Comment: entryComment(what + " cluster IP")}
	switch in.Action {
	case plan.Forward:
		ps.services = append(ps.services, r.virtualServer(sp, sp.ClusterIP, sp.Port, 0, in.Pool))
		ps.add(setClusterIP, cip)
		m := in.Masquerade
		ps.internalMasq = &m
	default:
		ps.add(verdictSet(in.Action), cip)
	}
	r.hairpin(ps, sp)
	if sp.HasExternal() {
		if err := r.external(ps, sp); err != nil {
			return nil, fmt.Errorf("%s: %w", sp.Key, err)
		}
	}
	return ps, nil
}

func verdictSet(a plan.Action) string {
	if a == plan.Reject {
		return setReject
	}
	return setDrop
}

func (ps *portState) add(set string, e ...Entry) { ps.entries[set] = append(ps.entries[set], e...) }

// extDest is one external address and port of a service port.
type extDest struct {
	addr      netip.Addr
	port      uint16
	masqSet   string // where it goes when masqueraded
	nodePort  bool
	whatAddr  string
	firewalls bool // source ranges apply
}

// external translates the external route: the default outcome at every
// external address, the bypasses as firewall marks, the source ranges.
func (r *renderer) external(ps *portState, sp *plan.ServicePort) error {
	proto := protocolOf(sp.Key)
	what := sp.ServicePortName.String()
	var dests []extDest
	for _, ip := range sp.ExternalIPs {
		dests = append(dests, extDest{ip, sp.Port, setExternalIP, false, "external IP", false})
	}
	for _, ip := range sp.LoadBalancerIPs {
		dests = append(dests, extDest{ip, sp.Port, setLoadBalancer, false, "load-balancer IP", len(sp.Firewall.Allow) > 0})
	}
	if sp.NodePort != 0 {
		for _, ip := range r.nodePortAddrs {
			dests = append(dests, extDest{ip, sp.NodePort, nodePortSet[proto], true, "node port", false})
		}
	}
	def := sp.External.Default
	if def.Action == plan.Forward && def.Masquerade.Mode == plan.MasqUnlessFrom {
		return fmt.Errorf("external traffic masqueraded unless from %v: the ipvs dataplane masquerades external traffic always or never", def.Masquerade.Except)
	}
	if len(sp.Firewall.Allow) > 0 && sp.Firewall.Outside != plan.Drop {
		return fmt.Errorf("firewall verdict %s: the ipvs dataplane drops what source ranges leave out", sp.Firewall.Outside)
	}
	for _, d := range dests {
		e := Entry{IP: d.addr, Protocol: proto, Port: d.port, Comment: entryComment(what + " " + d.whatAddr)}
		if !d.nodePort {
			ps.add(setExternal, e)
		}
		switch {
		case def.Action != plan.Forward:
			ps.add(verdictSet(def.Action), e)
		default:
			ps.services = append(ps.services, r.virtualServer(sp, d.addr, d.port, 0, def.Pool))
			if def.Masquerade.Mode == plan.MasqAlways {
				if d.nodePort && setTypes[d.masqSet] == BitmapPort {
					// Masqueraded by port, whatever the node address.
					ps.add(d.masqSet, Entry{Port: d.port, Comment: e.Comment})
				} else {
					ps.add(d.masqSet, e)
				}
			}
		}
		if d.firewalls {
			ps.add(setLBFirewall, e)
			for _, src := range sp.Firewall.Allow {
				for _, n := range splitDefault(src) {
					ps.add(setLBSourceCIDR, Entry{IP: d.addr, Protocol: proto, Port: d.port, Net: n, Comment: e.Comment})
				}
			}
		}
	}
	for i, b := range sp.External.Bypasses {
		if err := r.bypass(ps, sp, i, b, dests); err != nil {
			return err
		}
	}
	return nil
}

// bypass writes one bypass: a firewall-mark virtual server over its pool,
// and the rules that give its sources' packets to the external addresses
// that mark. The mark carries the masquerade bit when the bypass
// masquerades, so the kernel masquerades what the virtual server sends.
func (r *renderer) bypass(ps *portState, sp *plan.ServicePort, i int, b plan.Bypass, dests []extDest) error {
	if b.Masquerade.Mode == plan.MasqUnlessFrom {
		return fmt.Errorf("bypass %d masqueraded unless from %v: the ipvs dataplane masquerades bypasses always or never", i, b.Masquerade.Except)
	}
	mark := r.marks.mark(sp.Key, i, b.Masquerade.Mode == plan.MasqAlways)
	ps.services = append(ps.services, r.virtualServer(sp, unspecified(r.fam), 0, mark, b.Pool))
	// Each rule as iptables-save prints it: addresses and protocol
	// first, then the matches.
	type from struct{ src, match string }
	var froms []from
	switch {
	case b.From.Node:
		froms = []from{{"", "-m addrtype --src-type LOCAL "}}
	default:
		for _, p := range b.From.Prefixes {
			froms = append(froms, from{"-s " + p.String() + " ", ""})
		}
	}
	p := lower(protocolOf(sp.Key))
	for _, f := range froms {
		for _, d := range dests {
			ps.bypass = append(ps.bypass, fmt.Sprintf("%s-d %s -p %s %s-m %s --dport %d %s -j MARK --set-xmark %#x/0xffffffff",
				f.src, hostPrefix(d.addr), p, f.match, p, d.port, comment(sp.ServicePortName.String()+" bypass"), mark))
		}
	}
	return nil
}

// hairpin lists the endpoints that may be their own clients, per pool
// port, in KUBE-LOOP-BACK: what they send to themselves is masqueraded.
func (r *renderer) hairpin(ps *portState, sp *plan.ServicePort) {
	proto := protocolOf(sp.Key)
	seen := map[netip.AddrPort]bool{}
	for _, pool := range append(sp.Internal.Pools(), sp.External.Pools()...) {
		for _, ep := range sp.Backends(pool) {
			if seen[ep] || !slices.Contains(sp.Hairpin, ep.Addr()) {
				continue
			}
			seen[ep] = true
			ps.add(setLoopBack, Entry{IP: ep.Addr(), Protocol: proto, Port: ep.Port(), IP2: ep.Addr(), Comment: entryComment(sp.ServicePortName.String())})
		}
	}
}

// virtualServer is the virtual server of one address and port (or of a
// firewall mark) balancing over one of the port's pools.
func (r *renderer) virtualServer(sp *plan.ServicePort, addr netip.Addr, port uint16, mark uint32, pool plan.Pool) VirtualServer {
	vs := VirtualServer{Address: addr, Port: port, FWMark: mark, Scheduler: schedulerOf(sp)}
	if mark == 0 {
		vs.Protocol = protocolOf(sp.Key)
	}
	if sp.AffinitySeconds > 0 {
		vs.PersistenceTimeout = secondsToDuration(uint32(sp.AffinitySeconds))
	}
	for _, ep := range sp.Backends(pool) {
		vs.Reals = append(vs.Reals, RealServer{Address: ep.Addr(), Port: ep.Port(), Weight: 1})
	}
	return vs
}

// DefaultScheduler is kube-proxy's: round robin.
const DefaultScheduler = "rr"

func schedulerOf(sp *plan.ServicePort) string {
	if sp.Scheduler == "" {
		return DefaultScheduler
	}
	return sp.Scheduler
}

func unspecified(f plan.Family) netip.Addr {
	if f == plan.IPv6 {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}

// splitDefault writes a /0 as its two halves: a set cannot hold a /0.
func splitDefault(p netip.Prefix) []netip.Prefix {
	if p.Bits() != 0 {
		return []netip.Prefix{p.Masked()}
	}
	if p.Addr().Is4() {
		return []netip.Prefix{netip.MustParsePrefix("0.0.0.0/1"), netip.MustParsePrefix("128.0.0.0/1")}
	}
	return []netip.Prefix{netip.MustParsePrefix("::/1"), netip.MustParsePrefix("8000::/1")}
}

func hostPrefix(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()).String() }

// entryComment keeps a set entry's comment within what ipset takes: names
// from the API are already safe, but nothing unescaped reaches the kernel.
func entryComment(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			b[i] = '?'
		}
	}
	return string(b[:min(len(b), 255)])
}

// comment is an iptables comment match, quoted, with the same escaping.
func comment(s string) string {
	b := []byte(entryComment(s))
	for i, c := range b {
		if c == '\'' || c == '`' {
			b[i] = '?'
		}
	}
	return `-m comment --comment "` + string(b) + `"`
}

// markAllocator gives each bypass its firewall mark: the bypass and local
// bits (see marks), a 16-bit slot in the mark's upper half, and the
// masquerade bit when the bypass masquerades. A slot is the hash of the
// bypass's name, probed forward on a collision, so marks stay the same
// across restarts.
type markAllocator struct {
	marks
	slots map[string]uint32 // by bypass name
	used  map[uint32]string
}

func newMarkAllocator(m marks) *markAllocator {
	return &markAllocator{marks: m, slots: map[string]uint32{}, used: map[uint32]string{}}
}

func (m *markAllocator) mark(k plan.Key, i int, masq bool) uint32 {
	name := fmt.Sprintf("%s#%d", k, i)
	slot, ok := m.slots[name]
	if !ok {
		h := fnv.New32a()
		h.Write([]byte(name))
		slot = h.Sum32()%0xffff + 1
		for m.used[slot] != "" {
			slot = slot%0xffff + 1
		}
		m.slots[name], m.used[slot] = slot, name
	}
	mark := m.bypass | m.local | slot<<16
	if masq {
		mark |= m.masq
	}
	return mark
}

// release frees the slots of a port's bypasses.
func (m *markAllocator) release(k plan.Key) {
	prefix := k.String() + "#"
	for name, slot := range m.slots {
		if strings.HasPrefix(name, prefix) {
			delete(m.slots, name)
			delete(m.used, slot)
		}
	}
}
