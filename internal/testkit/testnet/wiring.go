package testnet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/svcproxy/svcproxy/internal/netwire"
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

// wiring holds the cluster's namespaces open while they are wired. Every
// change goes through one of them, so none touches the machine's network.
type wiring struct {
	c    *Cluster
	open map[*NS]*netwire.NS
}

func (w *wiring) close() {
	for _, h := range w.open {
		h.Close()
	}
}

// cluster wires the whole cluster once its namespaces exist.
func (w *wiring) cluster() error {
	c := w.c
	for _, ns := range c.Namespaces() {
		sysctls := baseSysctls
		if ns == c.Node1 || ns == c.Node2 {
			sysctls = append(sysctls[:len(sysctls):len(sysctls)], nodeSysctls...)
		}
		if err := errors.Join(w.open[ns].Sysctls(sysctls...), w.open[ns].Up("lo")); err != nil {
			return err
		}
	}
	if err := w.open[c.LAN].AddBridge("br0"); err != nil {
		return err
	}
	for _, port := range []struct {
		ns     *NS
		name   string
		v4, v6 netip.Addr
	}{
		{c.Node1, "node1", Node1Addrs.LANv4, Node1Addrs.LANv6},
		{c.Node2, "node2", Node2Addrs.LANv4, Node2Addrs.LANv6},
		{c.Ext, "ext", ExtIPv4, ExtIPv6},
	} {
		if err := w.lanPort(port.ns, port.name, port.v4, port.v6); err != nil {
			return err
		}
	}
	for _, p := range c.PodList {
		if err := w.pod(p); err != nil {
			return err
		}
	}
	ext := w.open[c.Ext]
	return errors.Join(w.nodeRoutes(c.Node1, Node2Addrs), w.nodeRoutes(c.Node2, Node1Addrs),
		ext.AddRoute(netwire.Route{Dst: ExternalPoolv4, Via: Node1Addrs.LANv4}),
		ext.AddRoute(netwire.Route{Dst: ExternalPoolv6, Via: Node1Addrs.LANv6}))
}

// lanPort connects ns to the LAN bridge: "port" in lan, "lan0" in ns.
func (w *wiring) lanPort(ns *NS, port string, v4, v6 netip.Addr) error {
	lan, h := w.open[w.c.LAN], w.open[ns]
	if err := lan.AddVeth(port, h, "lan0"); err != nil {
		return err
	}
	if err := lan.Plug(port, "br0"); err != nil {
		return err
	}
	if err := h.AddAddrs("lan0", netip.PrefixFrom(v4, LANv4.Bits()), netip.PrefixFrom(v6, LANv6.Bits())); err != nil {
		return err
	}
	return h.Up("lan0")
}

// pod connects a pod to its node. The pod holds /32 and /128 with an
// on-link route to the gateway, rather than its node's whole pod CIDR:
// with the CIDR on-link a pod would look for its node's other pods by ARP
// and ND on its veth, where they are not.
func (w *wiring) pod(p *Pod) error {
	node, pod := w.open[w.c.Node(p.Node)], w.open[p.NS]
	na, _ := NodeAddrsOf(p.Node) // layout checked the node
	return netwire.PodLink(node, "v-"+p.Name, pod, na.Gateways(), p.IPs())
}

// nodeRoutes sends the other node's pod CIDRs to that node's LAN IPs.
func (w *wiring) nodeRoutes(node *NS, other NodeAddrs) error {
	h := w.open[node]
	return errors.Join(
		h.AddRoute(netwire.Route{Dst: other.PodCIDRv4, Via: other.LANv4}),
		h.AddRoute(netwire.Route{Dst: other.PodCIDRv6, Via: other.LANv6}))
}

// waitAddrs waits until no namespace holds a tentative IPv6 address, so
// that sockets can bind and neighbour discovery answers. With DAD off this
// is normally true at once.
func (w *wiring) waitAddrs(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for _, ns := range w.c.Namespaces() {
		for {
			tentative, err := w.open[ns].Tentative()
			if err != nil {
				return err
			}
			if len(tentative) == 0 {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("%s: addresses still tentative after %v: %v", ns.Name, limit, tentative)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

func deleteNS(name string) error { return netwire.Delete(name) }

// Sweep deletes namespaces named "<prefix>-<pid>-..." whose pid is no
// longer running: what a crashed or killed test run left behind.
// Namespaces of running processes are left alone.
func Sweep(prefix string) error {
	names, err := netwire.Names(prefix + "-")
	if err != nil {
		return fmt.Errorf("sweep: %w", err)
	}
	var errs []error
	for _, name := range names {
		pid, ok := ownerPID(name, prefix)
		if !ok || running(pid) {
			continue
		}
		if err := deleteNS(name); err != nil {
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
