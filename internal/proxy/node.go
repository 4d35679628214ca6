package proxy

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/kube-proxy/config/v1alpha1"

	"github.com/svcproxy/svcproxy/internal/proxy/config"
	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// planConfig derives what the plan needs to know about this node. primary
// says NodePorts follow the Node's primary IPs, known once it arrives.
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
	pc := plan.Config{NodeName: nodeName, ClusterCIDRs: cidrs, MasqueradeAll: opts.Proxy.MasqueradeAll, NodeIPs: local,
		LocalhostNodePorts: opts.Proxy.LocalhostNodePorts, Scheduler: opts.Proxy.Scheduler}
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
	if !primary || !standalone {
		return pc, primary, nil
	}
	if ip := bindAddress(cfg); ip.IsValid() {
		pc.NodePortAddresses = append(pc.NodePortAddresses, netip.PrefixFrom(ip, ip.BitLen()))
		return pc, false, nil
	}
	env.Log.Info(`Warning: nodePortAddresses "primary" without a Node object: NodePorts are accepted on every local address`)
	return pc, false, nil
}

// bindAddress is kube-proxy's bindAddress, which overrides the Node's
// primary IP of its family; invalid when unset (0.0.0.0 or ::).
func bindAddress(cfg *v1alpha1.KubeProxyConfiguration) netip.Addr {
	ip, err := netip.ParseAddr(cfg.BindAddress)
	if err != nil || ip.IsUnspecified() {
		return netip.Addr{}
	}
	return ip.Unmap()
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
