package proxy

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/vishvananda/netlink"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/kube-proxy/config/v1alpha1"

	"github.com/svcproxy/svcproxy/internal/proxy/config"
	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// planConfig derives what the plan needs to know about this node. primary
// says NodePorts follow the Node's InternalIPs, known once it arrives.
func planConfig(opts *config.Options, nodeName string, env Env) (plan.Config, bool, error) {
	cfg, standalone := opts.Config, opts.Manifests != ""
	cidrs, err := config.ClusterCIDRs(cfg)
	if err != nil {
		return plan.Config{}, false, err
	}
	local, err := localAddrs(env)
	if err != nil {
		return plan.Config{}, false, fmt.Errorf("reading the node's addresses: %w", err)
	}
	pc := plan.Config{NodeName: nodeName, ClusterCIDRs: cidrs, MasqueradeAll: opts.Proxy.MasqueradeAll, NodeIPs: local}
	primary := false
	for _, s := range cfg.NodePortAddresses {
		if s == config.NodePortsPrimary {
			primary = true
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return plan.Config{}, false, fmt.Errorf("KubeProxyConfiguration.nodePortAddresses: %q: %w", s, err)
		}
		pc.NodePortAddresses = append(pc.NodePortAddresses, p.Masked())
	}
	if !primary {
		return pc, false, nil
	}
	if ip, err := netip.ParseAddr(cfg.BindAddress); err == nil && !ip.IsUnspecified() {
		pc.NodePortAddresses = append(pc.NodePortAddresses, netip.PrefixFrom(ip, ip.BitLen()))
		return pc, false, nil
	}
	if standalone {
		env.Logf(`nodePortAddresses "primary" without a Node object: NodePorts are accepted on every local address`)
		return pc, false, nil
	}
	return pc, true, nil
}

// localAddrs lists the node's addresses except loopback and link-local.
func localAddrs(env Env) ([]netip.Addr, error) {
	var out []netip.Addr
	err := env.Do(func() error {
		addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP)
			if ip = ip.Unmap(); ok && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() {
				out = append(out, ip)
			}
		}
		return err
	})
	return out, err
}

// standaloneNode stands for the Node object a manifests-only node lacks.
func standaloneNode(name string) *v1.Node {
	return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

// sysctlRoot is where sysctls are written.
const sysctlRoot = "/proc/sys"

// applySysctls sets the conntrack table size and timeouts kube-proxy sets:
// nf_conntrack_max from maxPerCore × CPUs (at least min), and the TCP and
// UDP timeouts. Zero values leave a setting alone. Values are written only
// when they differ.
func applySysctls(c v1alpha1.KubeProxyConntrackConfiguration, root string) error {
	var errs []error
	set := func(name string, v int64) {
		if v > 0 {
			errs = append(errs, writeSysctl(root, name, v))
		}
	}
	if c.MaxPerCore != nil && *c.MaxPerCore > 0 {
		n := int64(*c.MaxPerCore) * int64(runtime.NumCPU())
		if c.Min != nil && n < int64(*c.Min) {
			n = int64(*c.Min)
		}
		set("net/netfilter/nf_conntrack_max", n)
	}
	seconds := func(d *metav1.Duration) int64 {
		if d == nil {
			return 0
		}
		return int64(d.Duration / time.Second)
	}
	set("net/netfilter/nf_conntrack_tcp_timeout_established", seconds(c.TCPEstablishedTimeout))
	set("net/netfilter/nf_conntrack_tcp_timeout_close_wait", seconds(c.TCPCloseWaitTimeout))
	set("net/netfilter/nf_conntrack_udp_timeout", seconds(&c.UDPTimeout))
	set("net/netfilter/nf_conntrack_udp_timeout_stream", seconds(&c.UDPStreamTimeout))
	if c.TCPBeLiberal {
		set("net/netfilter/nf_conntrack_tcp_be_liberal", 1)
	}
	return errors.Join(errs...)
}

func writeSysctl(root, name string, v int64) error {
	path := filepath.Join(root, name)
	want := strconv.FormatInt(v, 10)
	if cur, err := os.ReadFile(path); err == nil && string(trimNL(cur)) == want {
		return nil
	}
	if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", name, want, err)
	}
	return nil
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}
