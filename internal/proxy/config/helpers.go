package config

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	"k8s.io/kube-proxy/config/v1alpha1"
)

// NodeName returns the name of this Node as kube-proxy derives it:
// hostnameOverride if set, else the host name, trimmed and lower-cased.
func NodeName(cfg *v1alpha1.KubeProxyConfiguration) (string, error) {
	name := cfg.HostnameOverride
	if name == "" {
		host, err := os.Hostname()
		if err != nil {
			return "", fmt.Errorf("node name: %w", err)
		}
		name = host
	}
	name = strings.ToLower(strings.TrimSpace(name))
	if name == "" {
		return "", fmt.Errorf("node name: hostnameOverride and the host name are empty")
	}
	return name, nil
}

// ClusterCIDRs parses clusterCIDR: empty, one CIDR, or a comma-separated
// dual-stack pair (one IPv4 and one IPv6). Prefixes are returned masked.
func ClusterCIDRs(cfg *v1alpha1.KubeProxyConfiguration) ([]netip.Prefix, error) {
	if cfg.ClusterCIDR == "" {
		return nil, nil
	}
	parts := strings.Split(cfg.ClusterCIDR, ",")
	if len(parts) > 2 {
		return nil, fmt.Errorf("must be one CIDR or a dual-stack pair of CIDRs")
	}
	out := make([]netip.Prefix, 0, len(parts))
	for _, p := range parts {
		prefix, err := parseCIDR(strings.TrimSpace(p))
		if err != nil {
			return nil, err
		}
		out = append(out, prefix)
	}
	if len(out) == 2 && out[0].Addr().Is4() == out[1].Addr().Is4() {
		return nil, fmt.Errorf("two CIDRs must be a dual-stack pair (one IPv4, one IPv6)")
	}
	return out, nil
}

func parseCIDR(s string) (netip.Prefix, error) {
	_, ipnet, err := net.ParseCIDR(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a valid CIDR (e.g. 10.244.0.0/16 or fd00:10:244::/56)", s)
	}
	addr, _ := netip.AddrFromSlice(ipnet.IP)
	ones, _ := ipnet.Mask.Size()
	return netip.PrefixFrom(addr.Unmap(), ones), nil
}

// BindAddress normalises a server address as kube-proxy does: "" stays ""
// (the server is disabled), a bare IP gets defaultPort, IP:port is checked.
// Anything else is an error.
func BindAddress(addr string, defaultPort int) (string, error) {
	if addr == "" {
		return "", nil
	}
	full := appendPort(addr, defaultPort)
	if _, err := hostPort(full); err != nil {
		return "", fmt.Errorf("bind address %q: %w", addr, err)
	}
	host, port, _ := net.SplitHostPort(full)
	ip := net.ParseIP(host)
	if v4 := ip.To4(); v4 != nil && !strings.Contains(host, ":") {
		ip = v4
	}
	return net.JoinHostPort(ip.String(), port), nil
}

func sortedKeys[K ~string, V any](m map[K]V) []K {
	return slices.Sorted(maps.Keys(m))
}
