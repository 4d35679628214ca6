package plan

import (
	"fmt"
	"net/netip"
	"testing"

	v1 "k8s.io/api/core/v1"
)

// TestNodePortAddressSets: which addresses accept NodePorts and where a
// health-check node port listens, family by family, for kube-proxy's
// nodePortAddresses (unset, "primary" as the Node's /32 and /128, CIDRs)
// and localhost NodePorts.
func TestNodePortAddressSets(t *testing.T) {
	nodeIPs := []netip.Addr{netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("2001:db8:1::1")}
	for _, tt := range []struct {
		name      string
		prefixes  []netip.Prefix
		localhost bool
		// per family: the node-port set, whether loopback accepts, the
		// health-check set ("any" for the wildcard)
		v4, v4health string
		v4loopback   bool
		v6, v6health string
	}{
		{name: "unset", v4: "any", v4health: "any", v6: "any", v6health: "any"},
		{name: "unset, localhost", localhost: true, v4: "any", v4loopback: true, v4health: "any", v6: "any", v6health: "any"},
		{name: "primary", prefixes: prefixes("198.51.100.1/32", "2001:db8:1::1/128"),
			v4: "[198.51.100.1]", v4health: "[198.51.100.1]", v6: "[2001:db8:1::1]", v6health: "[2001:db8:1::1]"},
		{name: "IPv4 CIDR only: IPv6 unrestricted", prefixes: prefixes("10.0.0.0/8"),
			v4: "[10.0.0.1]", v4health: "[10.0.0.1]", v6: "any", v6health: "any"},
		{name: "a /0", prefixes: prefixes("0.0.0.0/0", "10.0.0.0/8"), v4: "any", v4health: "any", v6: "any", v6health: "any"},
		{name: "loopback CIDR without localhost: rules skip it, the health server listens", prefixes: prefixes("127.0.0.0/8", "10.0.0.0/8"),
			v4: "[10.0.0.1]", v4health: "[10.0.0.1 127.0.0.1]", v6: "any", v6health: "any"},
		{name: "loopback CIDR with localhost", prefixes: prefixes("127.0.0.0/8", "10.0.0.0/8"), localhost: true,
			v4: "[10.0.0.1 127.0.0.1]", v4loopback: true, v4health: "[10.0.0.1 127.0.0.1]", v6: "any", v6health: "any"},
		{name: "localhost but loopback not listed", prefixes: prefixes("10.0.0.0/8"), localhost: true,
			v4: "[10.0.0.1]", v4health: "[10.0.0.1]", v6: "any", v6health: "any"},
		{name: "IPv6 loopback: health only", prefixes: prefixes("::1/128"), localhost: true,
			v4: "any", v4loopback: true, v4health: "any", v6: "[]", v6health: "[::1]"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := Config{NodeIPs: nodeIPs, NodePortAddresses: tt.prefixes, LocalhostNodePorts: tt.localhost}
			show := func(ips []netip.Addr, any bool) string {
				if any {
					return "any"
				}
				return fmt.Sprint(ips)
			}
			v4, v6 := c.NodePorts(IPv4), c.NodePorts(IPv6)
			if got := show(v4.IPs, v4.AnyLocal); got != tt.v4 {
				t.Errorf("IPv4 node ports on %s, want %s", got, tt.v4)
			}
			if got := show(v6.IPs, v6.AnyLocal); got != tt.v6 {
				t.Errorf("IPv6 node ports on %s, want %s", got, tt.v6)
			}
			if v4.Loopback != tt.v4loopback {
				t.Errorf("IPv4 loopback accepts: %t, want %t", v4.Loopback, tt.v4loopback)
			}
			if v6.Loopback {
				t.Errorf("IPv6 loopback accepts NodePorts")
			}
			if got := show(v4.HealthIPs, v4.HealthAnyLocal); got != tt.v4health {
				t.Errorf("IPv4 health checks on %s, want %s", got, tt.v4health)
			}
			if got := show(v6.HealthIPs, v6.HealthAnyLocal); got != tt.v6health {
				t.Errorf("IPv6 health checks on %s, want %s", got, tt.v6health)
			}
		})
	}
}

// TestPrimaryNodeIPs: kube-proxy's primary IPs, one per family, InternalIP
// before ExternalIP, bindAddress replacing its family's.
func TestPrimaryNodeIPs(t *testing.T) {
	addrs := func(kv ...string) *v1.Node {
		n := &v1.Node{}
		for i := 0; i < len(kv); i += 2 {
			n.Status.Addresses = append(n.Status.Addresses, v1.NodeAddress{Type: v1.NodeAddressType(kv[i]), Address: kv[i+1]})
		}
		return n
	}
	for _, tt := range []struct {
		node     *v1.Node
		override string
		want     string
	}{
		{addrs(), "", "[]"},
		{addrs("Hostname", "node1", "ExternalIP", "203.0.113.1", "InternalIP", "10.0.0.1", "InternalIP", "10.0.0.2"), "", "[10.0.0.1]"},
		{addrs("InternalIP", "10.0.0.1", "InternalIP", "fd00::1", "InternalIP", "fd00::2"), "", "[10.0.0.1 fd00::1]"},
		{addrs("InternalIP", "fd00::1", "ExternalIP", "203.0.113.1"), "", "[fd00::1 203.0.113.1]"},
		{addrs("InternalIP", "10.0.0.1", "InternalIP", "fd00::1"), "10.0.0.9", "[10.0.0.9 fd00::1]"},
		{addrs("InternalIP", "10.0.0.1"), "fd00::9", "[10.0.0.1 fd00::9]"},
	} {
		var override netip.Addr
		if tt.override != "" {
			override = netip.MustParseAddr(tt.override)
		}
		if got := fmt.Sprint(PrimaryNodeIPs(tt.node, override)); got != tt.want {
			t.Errorf("%v with bindAddress %q: %s, want %s", tt.node.Status.Addresses, tt.override, got, tt.want)
		}
	}
}
