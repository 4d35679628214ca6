package kubelet

import (
	"context"
	"errors"
	"net/netip"

	"github.com/svcproxy/svcproxy/internal/nsrun"
	"github.com/svcproxy/svcproxy/internal/tools/lab"
)

// wire creates a pod's namespace and connects it to the node: a veth with
// "eth0" in the pod, holding ip/32 and its IPv6 twin /128, and on the node
// on-link routes to both and the gateway addresses, which the pod routes
// everything through.
func (k *Kubelet) wire(ctx context.Context, netns string, ip netip.Addr, veth string) error {
	node, gw := k.node.Netns, k.node.Gateway().String()
	ip6, gw6 := k.node.PodIPv6(ip).String(), k.node.GatewayV6().String()
	for _, args := range [][]string{
		{"netns", "add", netns},
		{"-n", netns, "link", "set", "lo", "up"},
		{"-n", node, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns},
		{"-n", node, "addr", "add", gw + "/32", "dev", veth},
		{"-n", node, "link", "set", veth, "up"},
		{"-n", node, "route", "add", ip.String() + "/32", "dev", veth},
		{"-n", netns, "addr", "add", ip.String() + "/32", "dev", "eth0"},
		{"-n", netns, "link", "set", "eth0", "up"},
		{"-n", netns, "route", "add", gw, "dev", "eth0", "scope", "link"},
		{"-n", netns, "route", "add", "default", "via", gw, "dev", "eth0"},
		{"-n", node, "addr", "add", gw6 + "/128", "dev", veth, "nodad"},
		{"-n", node, "route", "add", ip6 + "/128", "dev", veth},
		{"-n", netns, "addr", "add", ip6 + "/128", "dev", "eth0", "nodad"},
		{"-n", netns, "route", "add", gw6, "dev", "eth0"},
		{"-n", netns, "route", "add", "default", "via", gw6, "dev", "eth0"},
	} {
		if err := nsrun.IP(ctx, args...); err != nil {
			return err
		}
	}
	return nil
}

// unwire deletes the pod's namespace (its veth goes with it, and the
// node's route with the veth) and its resolv.conf. A namespace that was
// never made is not an error.
func (k *Kubelet) unwire(ctx context.Context, netns string) error {
	var errs []error
	if lab.NetnsExists(netns) {
		errs = append(errs, nsrun.IP(ctx, "netns", "delete", netns))
	}
	errs = append(errs, lab.RemoveResolvConf(netns))
	return errors.Join(errs...)
}
