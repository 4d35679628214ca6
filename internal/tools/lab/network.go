package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"

	"github.com/svcproxy/svcproxy/internal/netwire"
)

// etcNetnsDir is where `ip netns exec` finds per-namespace files such as
// resolv.conf.
const etcNetnsDir = "/etc/netns"

// Sysctls of every namespace (no duplicate address detection to wait for)
// and of routing ones (nodes forward, and replies may leave by another
// interface than the request came in; the client spreads a multipath route
// by ports, as a load balancer spreads connections).
var (
	baseSysctls   = []string{"net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"}
	nodeSysctls   = []string{"net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"}
	clientSysctls = []string{"net.ipv4.fib_multipath_hash_policy=1"}
)

// buildNetwork creates the LAN bridge, the client, the control-plane host
// and the nodes, each node routing the other nodes' pod CIDRs over the LAN
// (and the control plane all of them: pods reach the apiserver through the
// kubernetes Service without masquerade). Pods come later, from their
// kubelets.
func (s *State) buildNetwork() error {
	if err := netwire.Add(s.LANNetns()); err != nil {
		return err
	}
	lan, err := netwire.Open(s.LANNetns())
	if err != nil {
		return err
	}
	defer lan.Close()
	if err := errors.Join(lan.Up("lo"), lan.AddBridge("br0")); err != nil {
		return err
	}
	hosts := []lanHost{
		{s.ClientNetns(), "client", clientSysctls, []netip.Addr{ClientIP, ClientIPv6}},
		{s.ControlPlaneNetns(), "controlplane", nil, []netip.Addr{ControlPlaneIP}},
	}
	for _, n := range s.Nodes {
		hosts = append(hosts, lanHost{n.Netns, n.Name, nodeSysctls, []netip.Addr{n.IP, n.IPv6}})
	}
	for _, h := range hosts {
		if err := h.plug(lan); err != nil {
			return err
		}
	}
	return s.routes()
}

// lanHost is a namespace on the LAN: port of the bridge, "eth0" inside.
type lanHost struct {
	netns, port string
	sysctls     []string
	addrs       []netip.Addr
}

// plug creates the host's namespace and plugs it into the bridge in lan.
func (l lanHost) plug(lan *netwire.NS) error {
	if err := netwire.Add(l.netns); err != nil {
		return err
	}
	h, err := netwire.Open(l.netns)
	if err != nil {
		return err
	}
	defer h.Close()
	var prefixes []netip.Prefix
	for _, a := range l.addrs {
		bits := LAN.Bits()
		if a.Is6() {
			bits = LANv6.Bits()
		}
		prefixes = append(prefixes, netip.PrefixFrom(a, bits))
	}
	return errors.Join(
		h.Sysctls(append(slices.Clip(baseSysctls), l.sysctls...)...),
		h.Up("lo"),
		lan.AddVeth(l.port, h, "eth0"),
		lan.Plug(l.port, "br0"),
		h.AddAddrs("eth0", prefixes...),
		h.Up("eth0"))
}

// routes gives the control plane a route to every pod CIDR, and each node
// a default route (as every real node has: the node's own connections to a
// ClusterIP need a route before they are DNATed) and routes to the other
// nodes' pods.
func (s *State) routes() error {
	cp, err := netwire.Open(s.ControlPlaneNetns())
	if err != nil {
		return err
	}
	defer cp.Close()
	for _, n := range s.Nodes {
		if err := cp.AddRoute(netwire.Route{Dst: n.PodCIDR, Via: n.IP}); err != nil {
			return err
		}
		h, err := netwire.Open(n.Netns)
		if err != nil {
			return err
		}
		err = errors.Join(h.AddRoute(netwire.Route{Via: ClientIP}), h.AddRoute(netwire.Route{Via: ClientIPv6}))
		for _, other := range s.Nodes {
			if other.Name != n.Name {
				err = errors.Join(err,
					h.AddRoute(netwire.Route{Dst: other.PodCIDR, Via: other.IP}),
					h.AddRoute(netwire.Route{Dst: other.PodCIDRv6, Via: other.IPv6}))
			}
		}
		h.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// Namespaces returns the names of every namespace of the lab that exists
// now, pods included.
func (s *State) Namespaces() ([]string, error) { return netwire.Names(s.Name + "-") }

// removeNetwork deletes every namespace of the lab and the resolv.conf
// files of its pods.
func (s *State) removeNetwork() error {
	names, err := s.Namespaces()
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for _, name := range names {
		if err := netwire.Delete(name); err != nil {
			errs = append(errs, err)
		}
	}
	etc, _ := filepath.Glob(filepath.Join(etcNetnsDir, s.Name+"-*"))
	for _, dir := range etc {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
		}
	}
	os.Remove(etcNetnsDir) // if the lab made it, and nothing else uses it
	return errors.Join(errs...)
}

// WriteResolvConf writes the resolv.conf `ip netns exec` shows a pod: the
// cluster DNS and the kubelet's search list for the pod's namespace.
func (s *State) WriteResolvConf(podNetns, namespace string) error {
	dir := filepath.Join(etcNetnsDir, podNetns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	conf := fmt.Sprintf("search %s.svc.%s svc.%s %s\nnameserver %s\noptions ndots:5\n",
		namespace, ClusterDomain, ClusterDomain, ClusterDomain, DNSIP)
	return os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(conf), 0o644)
}

// RemoveResolvConf removes what WriteResolvConf wrote.
func RemoveResolvConf(podNetns string) error {
	return os.RemoveAll(filepath.Join(etcNetnsDir, podNetns))
}
