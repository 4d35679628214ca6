// Package ipvs is svcproxy's IPVS dataplane (Dataplane, --proxy-mode=ipvs:
// render.go, glue.go, dataplane.go, trace.go) and the kernel layer it
// stands on: the IPVS virtual servers, the addresses bound to the
// kube-ipvs0 dummy interface, and the ipsets kube-proxy pairs with them,
// described as one value (State) that one step (Apply) makes the kernel
// hold, with as few changes as it can. The kernel layer makes no policy
// decision, and the dataplane only translates the plan's outcomes.
//
// Netlink (netlink.go) is the kernel: IPVS through github.com/moby/ipvs,
// the interface and the sets through github.com/vishvananda/netlink; no
// ipvsadm or ipset process. Fake (fake.go) applies the same State in
// memory, as strictly as the kernel, and prints itself (Dump) in the text
// the kernel's state prints as, so a test can hold one against the other.
//
// Removing a real server is graceful: it first gets weight 0, so that no
// new connection goes to it, and goes once its connections are gone or
// Options.GracePeriod has passed; Apply says when to look again (Result).
package ipvs

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// State is everything this layer programs in one network namespace.
type State struct {
	// Addresses are bound to the dummy interface (Options.Interface), as
	// /32 or /128, so that the node accepts packets to them: every address
	// a virtual server listens on that the node does not already own.
	Addresses []netip.Addr
	// Services are the IPVS virtual servers with their real servers.
	Services []VirtualServer
	// Sets are the ipsets, each named with Options.SetPrefix.
	Sets []Set
	// LocalMark, when not 0, is a mark bit whose packets the node takes
	// in as its own whatever their destination, in each of LocalFamilies:
	// a policy rule (priority Options.LocalRulePriority) sends them to a
	// routing table (Options.LocalTable) whose one route is "local default
	// dev lo". Service addresses that the node must not own on every port
	// (external and load-balancer IPs) reach IPVS this way.
	LocalMark     uint32
	LocalFamilies []Family
}

// Protocol is an IP protocol number.
type Protocol uint8

// The protocols of virtual servers and set entries.
const (
	TCP  Protocol = 6
	UDP  Protocol = 17
	SCTP Protocol = 132
)

func (p Protocol) String() string {
	switch p {
	case TCP:
		return "TCP"
	case UDP:
		return "UDP"
	case SCTP:
		return "SCTP"
	}
	return fmt.Sprintf("proto-%d", uint8(p))
}

// VirtualServer is one IPVS service: an address, protocol and port that
// the kernel balances over Reals, or, with FWMark, the packets of a family
// that carry that firewall mark.
type VirtualServer struct {
	Address  netip.Addr
	Protocol Protocol
	Port     uint16
	// FWMark, when not 0, makes this a firewall-mark service: it takes
	// the packets whose mark is exactly FWMark, before any service by
	// address would. Address is then the family's unspecified address
	// (0.0.0.0 or ::), Protocol and Port 0.
	FWMark uint32
	// Scheduler is one of Schedulers.
	Scheduler string
	// Flags are the scheduler and packet flags; persistence is set by
	// PersistenceTimeout, not here.
	Flags Flags
	// PersistenceTimeout, when above zero, makes the service persistent
	// (ClientIP affinity): a client keeps its real server while it sends
	// within this time. Whole seconds, as the kernel keeps it.
	PersistenceTimeout time.Duration
	// PersistenceMask is the prefix length that groups clients for
	// persistence; 0 means the whole address (32 or 128).
	PersistenceMask int
	// Reals are the real servers, forwarded to by masquerading (NAT).
	Reals []RealServer
}

// Flags are IPVS service flags (ipvsadm --sched-flags and -o).
type Flags uint32

// The flags this layer sets. IP_VS_SVC_F_PERSISTENT (0x1) follows
// PersistenceTimeout; IP_VS_SVC_F_HASHED (0x2) is the kernel's own.
const (
	// FlagOnePacket schedules every UDP datagram on its own (-o).
	FlagOnePacket Flags = 0x4
	// FlagSched1 is sh-fallback for sh and mh-fallback for mh: skip a
	// real server of weight 0.
	FlagSched1 Flags = 0x8
	// FlagSched2 is sh-port for sh and mh-port for mh: hash the source
	// port too.
	FlagSched2 Flags = 0x10
	// FlagSched3 is the scheduler's third flag (none uses it today).
	FlagSched3 Flags = 0x20
)

const (
	flagPersistent = 0x1
	flagHashed     = 0x2
	knownFlags     = FlagOnePacket | FlagSched1 | FlagSched2 | FlagSched3
)

func (f Flags) String() string {
	var names []string
	for _, n := range []struct {
		f    Flags
		name string
	}{{FlagOnePacket, "ops"}, {FlagSched1, "flag-1"}, {FlagSched2, "flag-2"}, {FlagSched3, "flag-3"}} {
		if f&n.f != 0 {
			names = append(names, n.name)
		}
	}
	if rest := f &^ knownFlags; rest != 0 {
		names = append(names, fmt.Sprintf("%#x", uint32(rest)))
	}
	return strings.Join(names, ",")
}

// Schedulers are the IPVS schedulers a VirtualServer may name, each a
// kernel module ip_vs_<name>.
var Schedulers = []string{"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh"}

// RealServer is one backend of a virtual server.
type RealServer struct {
	Address netip.Addr
	Port    uint16
	// Weight is 0 to 65535; 0 takes no new connections.
	Weight int
}

// SetType is an ipset type.
type SetType string

// The ipset types kube-proxy's IPVS mode uses.
const (
	HashIP        SetType = "hash:ip"
	HashIPPort    SetType = "hash:ip,port"
	HashIPPortIP  SetType = "hash:ip,port,ip"
	HashIPPortNet SetType = "hash:ip,port,net"
	HashNet       SetType = "hash:net"
	BitmapPort    SetType = "bitmap:port"
)

// Family is a set's address family.
type Family string

// The families of hash sets; bitmap:port has none.
const (
	IPv4 Family = "inet"
	IPv6 Family = "inet6"
)

// Set is one ipset. Sets are created with the comment extension, hash
// sets with hashsize 1024 and maxelem 65536, bitmap:port with range
// 0-65535, as kube-proxy's.
type Set struct {
	// Name is at most 31 bytes and starts with Options.SetPrefix.
	Name string
	Type SetType
	// Family is IPv4 or IPv6 for hash sets, "" for bitmap:port.
	Family  Family
	Entries []Entry
}

// Entry is one member of a set; which fields it has depends on the
// set's type, as in ipset's syntax:
//
//	hash:ip           IP
//	hash:ip,port      IP,Protocol:Port
//	hash:ip,port,ip   IP,Protocol:Port,IP2
//	hash:ip,port,net  IP,Protocol:Port,Net
//	hash:net          Net
//	bitmap:port       Port
type Entry struct {
	IP       netip.Addr
	Protocol Protocol
	Port     uint16
	IP2      netip.Addr
	Net      netip.Prefix
	// Comment says why the entry is there, e.g. the Service port.
	Comment string
}

// String is the entry in ipset's syntax (without the comment).
func (e Entry) String(t SetType) string {
	proto := strings.ToLower(e.Protocol.String())
	switch t {
	case HashIP:
		return e.IP.String()
	case HashIPPort:
		return fmt.Sprintf("%s,%s:%d", e.IP, proto, e.Port)
	case HashIPPortIP:
		return fmt.Sprintf("%s,%s:%d,%s", e.IP, proto, e.Port, e.IP2)
	case HashIPPortNet:
		return fmt.Sprintf("%s,%s:%d,%s", e.IP, proto, e.Port, e.Net)
	case HashNet:
		return e.Net.String()
	case BitmapPort:
		return fmt.Sprintf("%d", e.Port)
	}
	return "?"
}

// serviceKey identifies a virtual server in the kernel.
type serviceKey struct {
	Protocol Protocol
	AddrPort netip.AddrPort
	FWMark   uint32
}

func (k serviceKey) String() string {
	if k.FWMark != 0 {
		return fmt.Sprintf("FWM %d %s", k.FWMark, familyName(k.AddrPort.Addr()))
	}
	return fmt.Sprintf("%s %s", k.Protocol, k.AddrPort)
}

func familyName(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

func (vs *VirtualServer) key() serviceKey {
	return serviceKey{vs.Protocol, netip.AddrPortFrom(vs.Address, vs.Port), vs.FWMark}
}

func (rs RealServer) addrPort() netip.AddrPort { return netip.AddrPortFrom(rs.Address, rs.Port) }

// persistenceSeconds is the timeout as the kernel keeps it.
func (vs *VirtualServer) persistenceSeconds() uint32 {
	return uint32(vs.PersistenceTimeout / time.Second)
}

// mask is PersistenceMask with 0 spelled out.
func (vs *VirtualServer) mask() int {
	if vs.PersistenceMask == 0 {
		return vs.Address.BitLen()
	}
	return vs.PersistenceMask
}

// sameSettings says whether two virtual servers need no update.
func (vs *VirtualServer) sameSettings(o *VirtualServer) bool {
	return vs.Scheduler == o.Scheduler && vs.Flags == o.Flags &&
		vs.persistenceSeconds() == o.persistenceSeconds() &&
		(vs.persistenceSeconds() == 0 || vs.mask() == o.mask())
}

// Validate reports every problem of s, each naming the object and the
// field, so that a bad State is refused before anything is changed.
func (s *State) Validate(setPrefix string) error {
	var errs []error
	seen := map[netip.Addr]bool{}
	for _, a := range s.Addresses {
		if !a.IsValid() || a.Zone() != "" || a.Is4In6() {
			errs = append(errs, fmt.Errorf("addresses: %q is not a plain IPv4 or IPv6 address", a))
		} else if seen[a] {
			errs = append(errs, fmt.Errorf("addresses: %s is listed twice", a))
		}
		seen[a] = true
	}
	services := map[serviceKey]bool{}
	for i := range s.Services {
		vs := &s.Services[i]
		errs = append(errs, vs.validate()...)
		if services[vs.key()] {
			errs = append(errs, fmt.Errorf("service %s: listed twice", vs.key()))
		}
		services[vs.key()] = true
	}
	sets := map[string]bool{}
	for i := range s.Sets {
		errs = append(errs, s.Sets[i].validate(setPrefix)...)
		if sets[s.Sets[i].Name] {
			errs = append(errs, fmt.Errorf("set %s: listed twice", s.Sets[i].Name))
		}
		sets[s.Sets[i].Name] = true
	}
	return errors.Join(errs...)
}

func (vs *VirtualServer) validate() []error {
	name := "service " + vs.key().String()
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(name+": "+format, args...))
	}
	switch {
	case !plainAddr(vs.Address):
		bad("address %q is not a plain IPv4 or IPv6 address", vs.Address)
	case vs.FWMark != 0 && (!vs.Address.IsUnspecified() || vs.Protocol != 0 || vs.Port != 0):
		bad("a firewall-mark service has the unspecified address, protocol 0 and port 0")
	case vs.FWMark == 0 && vs.Protocol != TCP && vs.Protocol != UDP && vs.Protocol != SCTP:
		bad("protocol %d: want TCP, UDP or SCTP", uint8(vs.Protocol))
	}
	if !slices.Contains(Schedulers, vs.Scheduler) {
		bad("scheduler %q: want one of %s", vs.Scheduler, strings.Join(Schedulers, ", "))
	}
	if vs.Flags&^knownFlags != 0 {
		bad("flags %#x: unknown bits %#x", uint32(vs.Flags), uint32(vs.Flags&^knownFlags))
	}
	if vs.PersistenceTimeout < 0 || vs.PersistenceTimeout%time.Second != 0 || vs.PersistenceTimeout > 1<<31*time.Second {
		bad("persistence timeout %v: want whole seconds, 0 for none", vs.PersistenceTimeout)
	}
	if vs.PersistenceMask < 0 || vs.PersistenceMask > vs.Address.BitLen() {
		bad("persistence mask /%d: want 0 to %d", vs.PersistenceMask, vs.Address.BitLen())
	}
	reals := map[netip.AddrPort]bool{}
	for _, rs := range vs.Reals {
		switch {
		case !plainAddr(rs.Address) || rs.Address.Is4() != vs.Address.Is4():
			bad("real server %s: want a plain address of the service's family", rs.addrPort())
		case rs.Weight < 0 || rs.Weight > 65535:
			bad("real server %s: weight %d: want 0 to 65535", rs.addrPort(), rs.Weight)
		case reals[rs.addrPort()]:
			bad("real server %s: listed twice", rs.addrPort())
		}
		reals[rs.addrPort()] = true
	}
	return errs
}

func plainAddr(a netip.Addr) bool { return a.IsValid() && a.Zone() == "" && !a.Is4In6() }

func (set *Set) validate(prefix string) []error {
	name := "set " + set.Name
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(name+": "+format, args...))
	}
	if len(set.Name) > 31 || !strings.HasPrefix(set.Name, prefix) || strings.ContainsAny(set.Name, " \t\n\"'") {
		bad("name: want at most 31 bytes, no space or quote, starting with %q", prefix)
	}
	switch set.Type {
	case BitmapPort:
		if set.Family != "" {
			bad("family %q: bitmap:port has none", set.Family)
		}
	case HashIP, HashIPPort, HashIPPortIP, HashIPPortNet, HashNet:
		if set.Family != IPv4 && set.Family != IPv6 {
			bad("family %q: want inet or inet6", set.Family)
		}
	default:
		bad("type %q: want one of hash:ip, hash:ip,port, hash:ip,port,ip, hash:ip,port,net, hash:net, bitmap:port", set.Type)
		return errs
	}
	seen := map[string]bool{}
	for _, e := range set.Entries {
		key := e.String(set.Type)
		if err := set.validEntry(e); err != nil {
			bad("entry %s: %v", key, err)
		} else if seen[key] {
			bad("entry %s: listed twice", key)
		}
		seen[key] = true
		if len(e.Comment) > 255 || strings.ContainsAny(e.Comment, "\x00\n\"") {
			bad("entry %s: comment: want at most 255 bytes, no NUL, newline or double quote", key)
		}
	}
	return errs
}

// validEntry checks that e has the fields set's type needs, of its family.
func (set *Set) validEntry(e Entry) error {
	family := func(a netip.Addr) bool { return plainAddr(a) && a.Is4() == (set.Family == IPv4) }
	net := func(p netip.Prefix) bool { return p.IsValid() && family(p.Addr()) && p.Bits() > 0 && p == p.Masked() }
	proto := e.Protocol == TCP || e.Protocol == UDP || e.Protocol == SCTP
	var ok bool
	switch set.Type {
	case HashIP:
		ok = family(e.IP)
	case HashIPPort:
		ok = family(e.IP) && proto
	case HashIPPortIP:
		ok = family(e.IP) && proto && family(e.IP2)
	case HashIPPortNet:
		ok = family(e.IP) && proto && net(e.Net)
	case HashNet:
		ok = net(e.Net)
	case BitmapPort:
		ok = true
	}
	if !ok {
		return fmt.Errorf("want the fields of %s, addresses of family %s, networks masked and not /0", set.Type, set.Family)
	}
	return nil
}
