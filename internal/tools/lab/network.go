package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/svcproxy/svcproxy/internal/nsrun"
)

// netnsDir is where `ip netns add` keeps named namespaces; etcNetnsDir is
// where `ip netns exec` finds per-namespace files such as resolv.conf.
const (
	netnsDir    = "/run/netns"
	etcNetnsDir = "/etc/netns"
)

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
func (s *State) buildNetwork(ctx context.Context) error {
	lan, client := s.LANNetns(), s.ClientNetns()
	cmds := [][]string{
		{"netns", "add", lan},
		{"-n", lan, "link", "set", "lo", "up"},
		{"-n", lan, "link", "add", "br0", "type", "bridge"},
		{"-n", lan, "link", "set", "br0", "up"},
	}
	cmds = append(cmds, s.lanHost(client, "client", clientSysctls, ClientIP, ClientIPv6)...)
	cmds = append(cmds, s.lanHost(s.ControlPlaneNetns(), "controlplane", nil, ControlPlaneIP)...)
	for _, n := range s.Nodes {
		cmds = append(cmds, s.lanHost(n.Netns, n.Name, nodeSysctls, n.IP, n.IPv6)...)
	}
	for _, n := range s.Nodes {
		cmds = append(cmds, []string{"-n", s.ControlPlaneNetns(), "route", "add", n.PodCIDR.String(), "via", n.IP.String()})
		// A default route, as every real node has: the node's own
		// connections to a ClusterIP need a route before they are DNATed.
		cmds = append(cmds,
			[]string{"-n", n.Netns, "route", "add", "default", "via", ClientIP.String()},
			[]string{"-n", n.Netns, "-6", "route", "add", "default", "via", ClientIPv6.String()})
		for _, other := range s.Nodes {
			if other.Name != n.Name {
				cmds = append(cmds,
					[]string{"-n", n.Netns, "route", "add", other.PodCIDR.String(), "via", other.IP.String()},
					[]string{"-n", n.Netns, "route", "add", other.PodCIDRv6.String(), "via", other.IPv6.String()})
			}
		}
	}
	for _, args := range cmds {
		if err := nsrun.IP(ctx, args...); err != nil {
			return err
		}
	}
	return nil
}

// lanHost creates namespace ns and plugs it into the bridge as port, with
// addrs (an IPv4 and maybe an IPv6 one) on its "eth0".
func (s *State) lanHost(ns, port string, sysctls []string, addrs ...netip.Addr) [][]string {
	lan := s.LANNetns()
	cmds := [][]string{
		{"netns", "add", ns},
		append([]string{"netns", "exec", ns, "sysctl", "-q", "-w"}, append(baseSysctls, sysctls...)...),
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", lan, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"-n", lan, "link", "set", port, "master", "br0", "up"},
	}
	for _, a := range addrs {
		bits := LAN.Bits()
		if a.Is6() {
			bits = LANv6.Bits()
		}
		cmds = append(cmds, []string{"-n", ns, "addr", "add", netip.PrefixFrom(a, bits).String(), "dev", "eth0", "nodad"})
	}
	return append(cmds, []string{"-n", ns, "link", "set", "eth0", "up"})
}

// Namespaces returns the names of every namespace of the lab that exists
// now, pods included.
func (s *State) Namespaces() ([]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), s.Name+"-") {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// removeNetwork deletes every namespace of the lab and the resolv.conf
// files of its pods.
func (s *State) removeNetwork(ctx context.Context) error {
	names, err := s.Namespaces()
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for _, name := range names {
		if err := nsrun.IP(ctx, "netns", "delete", name); err != nil {
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

// NetnsExists reports whether the named namespace exists.
func NetnsExists(name string) bool {
	_, err := os.Stat(filepath.Join(netnsDir, name))
	return err == nil
}
