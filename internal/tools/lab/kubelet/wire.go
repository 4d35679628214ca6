package kubelet

import (
	"errors"
	"net/netip"

	"github.com/svcproxy/svcproxy/internal/netwire"
	"github.com/svcproxy/svcproxy/internal/tools/lab"
)

// wire creates a pod's namespace and connects it to the node (see
// netwire.PodLink): "eth0" in the pod holds ip and its IPv6 twin, and the
// node routes both to the pod's veth.
func (k *Kubelet) wire(netns string, ip netip.Addr, veth string) error {
	if err := netwire.Add(netns); err != nil {
		return err
	}
	node, err := netwire.Open(k.node.Netns)
	if err != nil {
		return err
	}
	defer node.Close()
	pod, err := netwire.Open(netns)
	if err != nil {
		return err
	}
	defer pod.Close()
	gateways := []netip.Addr{k.node.Gateway(), k.node.GatewayV6()}
	return errors.Join(pod.Up("lo"), netwire.PodLink(node, veth, pod, gateways, []netip.Addr{ip, k.node.PodIPv6(ip)}))
}

// unwire deletes the pod's namespace (its veth goes with it, and the
// node's route with the veth) and its resolv.conf. A namespace that was
// never made is not an error.
func (k *Kubelet) unwire(netns string) error {
	var errs []error
	if netwire.Exists(netns) {
		errs = append(errs, netwire.Delete(netns))
	}
	errs = append(errs, lab.RemoveResolvConf(netns))
	return errors.Join(errs...)
}
