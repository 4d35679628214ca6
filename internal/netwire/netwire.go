// Package netwire makes named network namespaces and wires them together
// over netlink: what `ip netns add`, `ip link`, `ip addr` and `ip route`
// do, without a fork of ip per step (each costs 100-150 ms in the test VM).
// The tests' clusters (testkit/testnet), the lab's network and its kubelet's
// pods are all built with it, so a fix to one (the bridge's multicast
// snooping) is a fix to all.
//
// A namespace is named as `ip netns add` names it, a bind mount at
// /run/netns/NAME in a shared mount, so `ip netns exec`, package nsrun and
// processes started inside it all find it. Every change is made through a
// namespace opened by name (NS), never in the caller's own: there is no
// way to wire the machine's network with this package.
package netwire

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/svcproxy/svcproxy/internal/nsrun"
)

// Dir is where named namespaces are mounted, as iproute2 keeps them.
const Dir = "/run/netns"

// Add creates the named network namespace name, as `ip netns add` does. It
// fails if the name is taken.
func Add(name string) error {
	if err := sharedDir(); err != nil {
		return fmt.Errorf("netns add %s: %w", name, err)
	}
	path := filepath.Join(Dir, name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0)
	if err != nil {
		return fmt.Errorf("netns add %s: %w", name, err)
	}
	f.Close()
	errc := make(chan error, 1)
	go func() { errc <- mountNew(path) }()
	if err := <-errc; err != nil {
		os.Remove(path)
		return fmt.Errorf("netns add %s: %w", name, err)
	}
	return nil
}

// sharedDir makes Dir a mount point with shared propagation (bind-mounting
// it on itself the first time), as iproute2 does, so that a namespace
// mounted later is seen in mount namespaces made earlier (`ip netns exec`
// makes one per command).
func sharedDir() error {
	if err := os.MkdirAll(Dir, 0o755); err != nil {
		return err
	}
	err := unix.Mount("", Dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if !errors.Is(err, unix.EINVAL) { // EINVAL: not a mount point yet
		return err
	}
	if err := unix.Mount(Dir, Dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s: %w", Dir, err)
	}
	return unix.Mount("", Dir, "none", unix.MS_SHARED|unix.MS_REC, "")
}

// mountNew gives its thread a new network namespace, bind-mounts it on
// path and returns the thread to where it was. Should the return fail,
// the thread stays locked and the runtime retires it with the goroutine.
func mountNew(path string) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("unshare: %w", err)
	}
	self := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
	mountErr := unix.Mount(self, path, "none", unix.MS_BIND, "")
	if err := netns.Set(orig); err != nil {
		return errors.Join(mountErr, fmt.Errorf("restore netns: %w", err))
	}
	runtime.UnlockOSThread()
	return mountErr
}

// Delete removes the named namespace, as `ip netns delete` does. The
// namespace itself lives on, nameless, while a socket or process holds it.
func Delete(name string) error {
	path := filepath.Join(Dir, name)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("netns delete %s: %w", name, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("netns delete %s: %w", name, err)
	}
	return nil
}

// Exists reports whether the named namespace exists.
func Exists(name string) bool {
	_, err := os.Stat(filepath.Join(Dir, name))
	return err == nil
}

// Names returns the names of the namespaces that start with prefix.
func Names(prefix string) ([]string, error) {
	entries, err := os.ReadDir(Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// NS is a named namespace opened for wiring: every change goes through a
// netlink socket inside it.
type NS struct {
	Name   string
	handle netns.NsHandle
	link   *netlink.Handle
}

// Open opens the named namespace for wiring.
func Open(name string) (*NS, error) {
	h, err := netns.GetFromName(name)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", name, err)
	}
	l, err := netlink.NewHandleAt(h)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("netlink in %s: %w", name, err)
	}
	return &NS{Name: name, handle: h, link: l}, nil
}

// Close releases the namespace's handles; the namespace stays.
func (ns *NS) Close() {
	ns.link.Close()
	ns.handle.Close()
}

func (ns *NS) String() string { return ns.Name }

// errorf names the namespace in an error.
func (ns *NS) errorf(format string, args ...any) error {
	return fmt.Errorf("in %s: "+format, append([]any{ns.Name}, args...)...)
}

// Sysctls sets each "key=value" (as `sysctl -w` takes it) inside ns.
func (ns *NS) Sysctls(settings ...string) error {
	return nsrun.Do(ns.Name, func() error {
		for _, s := range settings {
			key, value, ok := strings.Cut(s, "=")
			if !ok {
				return fmt.Errorf("sysctl %q: want key=value", s)
			}
			path := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
			if err := os.WriteFile(path, []byte(value), 0); err != nil {
				return fmt.Errorf("sysctl %s: %w", s, err)
			}
		}
		return nil
	})
}

// Up sets links up.
func (ns *NS) Up(links ...string) error {
	for _, name := range links {
		l, err := ns.linkByName(name)
		if err != nil {
			return err
		}
		if err := ns.link.LinkSetUp(l); err != nil {
			return ns.errorf("link set %s up: %w", name, err)
		}
	}
	return nil
}

func (ns *NS) linkByName(name string) (netlink.Link, error) {
	l, err := ns.link.LinkByName(name)
	if err != nil {
		return nil, ns.errorf("link %s: %w", name, err)
	}
	return l, nil
}

// AddBridge creates a bridge, up. Multicast snooping is off: a neighbour
// solicitation must reach every port, even one that came up after the
// MLD report that snooping would go by.
func (ns *NS) AddBridge(name string) error {
	off := false
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}, MulticastSnooping: &off}
	if err := ns.link.LinkAdd(br); err != nil {
		return ns.errorf("add bridge %s: %w", name, err)
	}
	return ns.Up(name)
}

// AddVeth creates a veth pair: name in ns, peerName in peer. Both are down.
func (ns *NS) AddVeth(name string, peer *NS, peerName string) error {
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peerName, PeerNamespace: netlink.NsFd(peer.handle)}
	if err := ns.link.LinkAdd(v); err != nil {
		return ns.errorf("add veth %s (peer %s in %s): %w", name, peerName, peer.Name, err)
	}
	return nil
}

// Plug makes link a port of bridge and sets it up.
func (ns *NS) Plug(link, bridge string) error {
	l, err := ns.linkByName(link)
	if err != nil {
		return err
	}
	br, err := ns.linkByName(bridge)
	if err != nil {
		return err
	}
	if err := ns.link.LinkSetMaster(l, br); err != nil {
		return ns.errorf("link set %s master %s: %w", link, bridge, err)
	}
	return ns.Up(link)
}

// AddAddrs puts addresses on link. IPv6 ones skip duplicate address
// detection ("nodad"): nothing else on these links could hold them.
func (ns *NS) AddAddrs(link string, addrs ...netip.Prefix) error {
	l, err := ns.linkByName(link)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		addr := &netlink.Addr{IPNet: ipNet(a)}
		if a.Addr().Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := ns.link.AddrAdd(l, addr); err != nil {
			return ns.errorf("addr add %s dev %s: %w", a, link, err)
		}
	}
	return nil
}

// Tentative returns the IPv6 addresses still waiting for duplicate
// address detection; sockets cannot bind them yet.
func (ns *NS) Tentative() ([]netip.Addr, error) {
	addrs, err := ns.link.AddrList(nil, netlink.FAMILY_V6)
	if err != nil {
		return nil, ns.errorf("addr list: %w", err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		if a.Flags&unix.IFA_F_TENTATIVE != 0 {
			ip, _ := netip.AddrFromSlice(a.IP)
			out = append(out, ip)
		}
	}
	return out, nil
}

// Route is one route of the main table.
type Route struct {
	// Dst is the destination; the zero Prefix is the default route of
	// Via's family.
	Dst netip.Prefix
	// Via is the gateway; without one, Dst is on-link on Dev.
	Via netip.Addr
	// Dev is the link to send by; "" lets the kernel pick it from Via.
	Dev string
	// Nexthops spread Dst over several gateways on Dev (a multipath route)
	// instead of Via.
	Nexthops []netip.Addr
}

func (r Route) String() string {
	s := "default"
	if r.Dst.IsValid() {
		s = r.Dst.String()
	}
	if r.Via.IsValid() {
		s += " via " + r.Via.String()
	}
	for _, h := range r.Nexthops {
		s += " nexthop via " + h.String()
	}
	if r.Dev != "" {
		s += " dev " + r.Dev
	}
	return s
}

// AddRoute adds r; it fails if the route exists.
func (ns *NS) AddRoute(r Route) error { return ns.route("add", r, ns.link.RouteAdd) }

// ReplaceRoute adds r or replaces the route to its Dst.
func (ns *NS) ReplaceRoute(r Route) error { return ns.route("replace", r, ns.link.RouteReplace) }

// route translates r and applies it with apply (`ip route verb`).
func (ns *NS) route(verb string, r Route, apply func(*netlink.Route) error) error {
	nr, err := ns.netlinkRoute(r)
	if err == nil {
		err = apply(nr)
	}
	if err != nil {
		return ns.errorf("route %s %s: %w", verb, r, err)
	}
	return nil
}

// DeleteRoute deletes the route to dst.
func (ns *NS) DeleteRoute(dst netip.Prefix) error {
	if err := ns.link.RouteDel(&netlink.Route{Dst: ipNet(dst)}); err != nil {
		return ns.errorf("route del %s: %w", dst, err)
	}
	return nil
}

// FlushRoutes deletes every route of the main table whose destination lies
// within p, as `ip route flush root p` does.
func (ns *NS) FlushRoutes(p netip.Prefix) error {
	family := netlink.FAMILY_V4
	if p.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	routes, err := ns.link.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return ns.errorf("route list: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		dst, ok := prefixOf(r.Dst)
		if !ok || !p.Contains(dst.Addr()) || dst.Bits() < p.Bits() {
			continue
		}
		if err := ns.link.RouteDel(&r); err != nil {
			return ns.errorf("route del %s: %w", dst, err)
		}
	}
	return nil
}

// netlinkRoute translates r.
func (ns *NS) netlinkRoute(r Route) (*netlink.Route, error) {
	nr := &netlink.Route{}
	if r.Dst.IsValid() {
		nr.Dst = ipNet(r.Dst)
	}
	if r.Via.IsValid() {
		nr.Gw = r.Via.AsSlice()
	}
	dev := 0
	if r.Dev != "" {
		l, err := ns.linkByName(r.Dev)
		if err != nil {
			return nil, err
		}
		dev = l.Attrs().Index
	}
	for _, h := range r.Nexthops {
		nr.MultiPath = append(nr.MultiPath, &netlink.NexthopInfo{LinkIndex: dev, Gw: h.AsSlice()})
	}
	if len(nr.MultiPath) == 0 {
		nr.LinkIndex = dev
	}
	if !r.Via.IsValid() && len(r.Nexthops) == 0 {
		// On-link, as ip makes a route without a gateway.
		nr.Scope = netlink.SCOPE_LINK
	}
	return nr, nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	bits, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), bits), true
}

// PodLink connects a pod's namespace to its node's, as a routed pod
// network does: a veth, hostSide on the node and "eth0" in the pod. The
// pod holds each of addrs alone (/32, /128) and routes everything through
// the gateway of that family, on-link, rather than holding its node's pod
// CIDR: with the CIDR on-link it would look for the node's other pods by
// ARP and ND on its veth, where they are not. The node holds the gateways
// on the veth and routes each pod address to it. gateways and addrs hold
// one address per family.
func PodLink(node *NS, hostSide string, pod *NS, gateways, addrs []netip.Addr) error {
	if err := node.AddVeth(hostSide, pod, "eth0"); err != nil {
		return err
	}
	var gws []netip.Prefix
	for _, gw := range gateways {
		gws = append(gws, netip.PrefixFrom(gw, gw.BitLen()))
	}
	if err := errors.Join(node.AddAddrs(hostSide, gws...), node.Up(hostSide)); err != nil {
		return err
	}
	for _, a := range addrs {
		gw := sameFamily(gateways, a)
		if !gw.IsValid() {
			return fmt.Errorf("pod address %s: no gateway of its family in %v", a, gateways)
		}
		host := netip.PrefixFrom(a, a.BitLen())
		err := errors.Join(
			node.AddRoute(Route{Dst: host, Dev: hostSide}),
			pod.AddAddrs("eth0", host),
			pod.Up("eth0"),
			pod.AddRoute(Route{Dst: netip.PrefixFrom(gw, gw.BitLen()), Dev: "eth0"}),
			pod.AddRoute(Route{Via: gw, Dev: "eth0"}))
		if err != nil {
			return err
		}
	}
	return nil
}

func sameFamily(addrs []netip.Addr, a netip.Addr) netip.Addr {
	for _, x := range addrs {
		if x.Is4() == a.Is4() {
			return x
		}
	}
	return netip.Addr{}
}
