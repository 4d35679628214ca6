package testnet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/svcproxy/svcproxy/internal/nsrun"
)

// Sysctls set in every namespace before its links exist, so that no
// address, link-local ones included, waits for duplicate address detection.
var baseSysctls = []string{
	"net.ipv6.conf.all.accept_dad=0",
	"net.ipv6.conf.default.accept_dad=0",
}

// Sysctls set in node namespaces: nodes route, and asymmetric paths (a
// reply leaving by another interface than the request came in) are fine.
//
// Nodes send no IPv4 ICMP redirects, as routers on a shared LAN commonly
// do not. A node forwards some of ext's packets back out the LAN port they
// came in by (to a NodePort whose endpoint is on the other node, say), and
// would tell ext so; Linux counts redirects in the same per-peer state as
// its ICMP error rate limit, and would then withhold the next "port
// unreachable" to ext for about a second, turning a refusal into a timeout.
var nodeSysctls = []string{
	"net.ipv4.ip_forward=1",
	"net.ipv6.conf.all.forwarding=1",
	"net.ipv4.conf.all.rp_filter=0",
	"net.ipv4.conf.default.rp_filter=0",
	"net.ipv4.conf.all.send_redirects=0",
	"net.ipv4.conf.default.send_redirects=0",
}

// commands returns, in order, the arguments of every `ip` call that wires
// the cluster once its namespaces exist. Each one names its namespace
// ("-n NS" or "netns exec NS"): none touches the caller's namespace.
func (c *Cluster) commands() [][]string {
	var cmds [][]string
	for _, ns := range c.Namespaces() {
		sysctls := baseSysctls
		if ns == c.Node1 || ns == c.Node2 {
			sysctls = append(slices.Clone(baseSysctls), nodeSysctls...)
		}
		cmds = append(cmds,
			append([]string{"netns", "exec", ns.Name, "sysctl", "-q", "-w"}, sysctls...),
			in(ns, "link", "set", "lo", "up"))
	}
	// Multicast snooping off: neighbour solicitations must reach every
	// port even if an MLD report was sent before the port came up.
	cmds = append(cmds,
		in(c.LAN, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"),
		in(c.LAN, "link", "set", "br0", "up"))
	cmds = append(cmds, c.lanPort(c.Node1, "node1", Node1Addrs.LANv4, Node1Addrs.LANv6)...)
	cmds = append(cmds, c.lanPort(c.Node2, "node2", Node2Addrs.LANv4, Node2Addrs.LANv6)...)
	cmds = append(cmds, c.lanPort(c.Ext, "ext", ExtIPv4, ExtIPv6)...)
	for _, p := range c.PodList {
		cmds = append(cmds, c.podWiring(p)...)
	}
	cmds = append(cmds, nodeRoutes(c.Node1, Node2Addrs)...)
	cmds = append(cmds, nodeRoutes(c.Node2, Node1Addrs)...)
	cmds = append(cmds,
		in(c.Ext, "route", "add", ExternalPoolv4.String(), "via", Node1Addrs.LANv4.String()),
		in(c.Ext, "-6", "route", "add", ExternalPoolv6.String(), "via", Node1Addrs.LANv6.String()))
	return cmds
}

// lanPort connects ns to the LAN bridge: "port" in lan, "lan0" in ns.
func (c *Cluster) lanPort(ns *NS, port string, v4, v6 netip.Addr) [][]string {
	return [][]string{
		in(c.LAN, "link", "add", port, "type", "veth", "peer", "name", "lan0", "netns", ns.Name),
		in(c.LAN, "link", "set", port, "master", "br0", "up"),
		in(ns, "addr", "add", prefixed(v4, LANv4), "dev", "lan0"),
		in(ns, "addr", "add", prefixed(v6, LANv6), "dev", "lan0", "nodad"),
		in(ns, "link", "set", "lan0", "up"),
	}
}

// podWiring connects a pod to its node. The pod holds /32 and /128 with
// an on-link route to the gateway, rather than its node's whole pod CIDR:
// with the CIDR on-link a pod would look for its node's other pods by ARP
// and ND on its veth, where they are not.
func (c *Cluster) podWiring(p *Pod) [][]string {
	node := c.Node(p.Node)
	na, _ := NodeAddrsOf(p.Node) // layout checked the node
	veth := "v-" + p.Name
	gw4, gw6 := na.GatewayV4().String(), na.GatewayV6().String()
	return [][]string{
		in(node, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", p.NS.Name),
		in(node, "addr", "add", gw4+"/32", "dev", veth),
		in(node, "addr", "add", gw6+"/128", "dev", veth, "nodad"),
		in(node, "link", "set", veth, "up"),
		in(node, "route", "add", p.IPv4.String()+"/32", "dev", veth),
		in(node, "-6", "route", "add", p.IPv6.String()+"/128", "dev", veth),
		in(p.NS, "addr", "add", p.IPv4.String()+"/32", "dev", "eth0"),
		in(p.NS, "addr", "add", p.IPv6.String()+"/128", "dev", "eth0", "nodad"),
		in(p.NS, "link", "set", "eth0", "up"),
		in(p.NS, "route", "add", gw4, "dev", "eth0", "scope", "link"),
		in(p.NS, "route", "add", "default", "via", gw4, "dev", "eth0"),
		in(p.NS, "-6", "route", "add", gw6, "dev", "eth0"),
		in(p.NS, "-6", "route", "add", "default", "via", gw6, "dev", "eth0"),
	}
}

// nodeRoutes sends the other node's pod CIDRs to that node's LAN IPs.
func nodeRoutes(node *NS, other NodeAddrs) [][]string {
	return [][]string{
		in(node, "route", "add", other.PodCIDRv4.String(), "via", other.LANv4.String()),
		in(node, "-6", "route", "add", other.PodCIDRv6.String(), "via", other.LANv6.String()),
	}
}

func in(ns *NS, args ...string) []string { return append([]string{"-n", ns.Name}, args...) }

func prefixed(a netip.Addr, p netip.Prefix) string {
	return netip.PrefixFrom(a, p.Bits()).String()
}

// ip runs the ip tool with args.
func ip(ctx context.Context, args ...string) error { return nsrun.IP(ctx, args...) }

// waitAddrs waits until no namespace holds a tentative IPv6 address, so
// that sockets can bind and neighbour discovery answers. With DAD off this
// is normally true at once.
func (c *Cluster) waitAddrs(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for _, ns := range c.Namespaces() {
		for {
			out, err := exec.CommandContext(ctx, "ip", "-n", ns.Name, "-6", "addr", "show", "tentative").CombinedOutput()
			if err != nil {
				return fmt.Errorf("%s: list tentative addresses: %w: %s", ns.Name, err, out)
			}
			if len(strings.TrimSpace(string(out))) == 0 {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: addresses still tentative after %v:\n%s", ns.Name, limit, out)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

func deleteNS(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return ip(ctx, "netns", "delete", name)
}

// netnsDir is where `ip netns add` keeps named namespaces.
const netnsDir = "/run/netns"

// Sweep deletes namespaces named "<prefix>-<pid>-..." whose pid is no
// longer running: what a crashed or killed test run left behind.
// Namespaces of running processes are left alone.
func Sweep(prefix string) error {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sweep: %w", err)
	}
	var errs []error
	for _, e := range entries {
		pid, ok := ownerPID(e.Name(), prefix)
		if !ok || running(pid) {
			continue
		}
		if err := deleteNS(e.Name()); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ownerPID parses the pid out of "<prefix>-<pid>-...".
func ownerPID(name, prefix string) (int, bool) {
	rest, ok := strings.CutPrefix(name, prefix+"-")
	if !ok {
		return 0, false
	}
	field, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(field)
	return pid, err == nil && pid > 0
}

func running(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
