// Package lab runs a whole Kubernetes cluster on one Linux machine, without
// containers, with svcproxy as every node's Service proxy: `svcproxy lab`.
//
// Network namespaces are the machines. A bridge in the "lan" namespace is
// the network; each node is a namespace on it with its pods' namespaces
// hanging off veths; the "client" namespace is the outside world, where a
// browser or a cloud load balancer would be. The control plane is real
// (etcd, kube-apiserver, kube-controller-manager and kube-scheduler, on the
// machine's loopback), every node runs a kubelet stand-in (package
// lab/kubelet) and svcproxy, a load-balancer controller (package
// lab/lbpool) gives LoadBalancer Services addresses the client can reach,
// and a web page (package lab/ui) draws it all, live.
//
// Everything the lab creates is named after it: namespaces "<name>-...",
// files under /run/svcproxy-lab/<name> and /etc/netns/<name>-... (a pod's
// resolv.conf), processes recorded there with their start times. Down
// removes exactly those, also after a failed or interrupted Up. Nothing is
// ever added to the machine's own network namespace; the one socket the
// lab has there is the page's listener, on the loopback.
package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"

	"github.com/svcproxy/svcproxy/internal/nsrun"
)

// StateRoot holds one directory per lab.
const StateRoot = "/run/svcproxy-lab"

// The address plan. Every address lives only inside the lab's namespaces;
// the external ones come from the documentation ranges (RFC 5737).
var (
	LAN            = netip.MustParsePrefix("198.51.100.0/24") // node N is .N, the client .100
	ClientIP       = netip.MustParseAddr("198.51.100.100")
	ControlPlaneIP = netip.MustParseAddr("198.51.100.250")  // the apiserver, :6443: default/kubernetes's endpoint
	ClusterCIDR    = netip.MustParsePrefix("10.244.0.0/16") // node N's pods: 10.244.N.0/24
	// The IPv6 side (RFC 3849 and ULA ranges): node N is LANv6::N, the
	// client ::100; node N's pods are fd00:10:244:N::/64, a pod's IPv6
	// ending as its IPv4 does. The control plane is IPv4 only.
	LANv6         = netip.MustParsePrefix("2001:db8:51:100::/64")
	ClientIPv6    = netip.MustParseAddr("2001:db8:51:100::100")
	ClusterCIDRv6 = netip.MustParsePrefix("fd00:10:244::/48")
	ServiceCIDR   = "10.96.0.0/16,fd00:10:96::/112"
	KubernetesIP  = netip.MustParseAddr("10.96.0.1")        // the kubernetes Service (the API server)
	DNSIP         = netip.MustParseAddr("10.96.0.10")       // the kube-dns Service
	LBPool        = netip.MustParsePrefix("203.0.113.0/24") // LoadBalancer ingress IPs
)

// ClusterDomain is the DNS suffix of Services.
const ClusterDomain = "cluster.local"

// Zones are handed to nodes in turn: node1 zone-a, node2 zone-b, node3 zone-a...
var Zones = []string{"zone-a", "zone-b"}

// State is everything the lab's commands and processes need to know about
// a running lab. Up writes it to <Dir>/lab.json; the other commands read it.
type State struct {
	Name       string
	Dir        string // StateRoot/Name
	Kubeconfig string // the admin kubeconfig
	BinDir     string // control-plane binaries, kubectl among them
	Self       string // the svcproxy executable every lab process runs
	ProxyMode  string // nftables or iptables
	// ProxyVerbosity is the -v of every node's svcproxy.
	ProxyVerbosity int
	Nodes          []Node
	// UI is the address of the lab's page, http://127.0.0.1:PORT/.
	UI string `json:",omitempty"`
}

// Node is one node of the lab.
type Node struct {
	Name    string // node1, node2, ...
	Zone    string
	IP      netip.Addr   // on the LAN
	PodCIDR netip.Prefix // 10.244.N.0/24; .1 is the node's side of every pod veth
	// IPv6 and PodCIDRv6 are the same for IPv6: LANv6::N, fd00:10:244:N::/64.
	IPv6      netip.Addr
	PodCIDRv6 netip.Prefix
	Netns     string
}

var labName = regexp.MustCompile(`^[a-z][a-z0-9]{0,9}$`)

// NewState plans a lab of n nodes; it creates nothing.
func NewState(name string, n int, self, proxyMode string) (*State, error) {
	if !labName.MatchString(name) {
		return nil, fmt.Errorf("lab name %q: want 1-10 of [a-z0-9], starting with a letter", name)
	}
	if n < 1 || n > 20 {
		return nil, fmt.Errorf("nodes: want 1 to 20, got %d", n)
	}
	if proxyMode != "nftables" && proxyMode != "iptables" {
		return nil, fmt.Errorf("proxy mode %q: want nftables or iptables", proxyMode)
	}
	s := &State{Name: name, Dir: filepath.Join(StateRoot, name), Self: self, ProxyMode: proxyMode}
	s.Kubeconfig = filepath.Join(s.Dir, "controlplane", "kubeconfig")
	for i := 1; i <= n; i++ {
		s.Nodes = append(s.Nodes, Node{
			Name:      fmt.Sprintf("node%d", i),
			Zone:      Zones[(i-1)%len(Zones)],
			IP:        nsrun.NthAddr(LAN, i),
			PodCIDR:   netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i), 0}), 24),
			IPv6:      nsrun.NthAddr(LANv6, i),
			PodCIDRv6: netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0, 0, 0x10, 0x02, 0x44, 0, byte(i)}), 64),
			Netns:     fmt.Sprintf("%s-node%d", name, i),
		})
	}
	return s, nil
}

// Netns names of the bridge's and the outside world's namespaces.
func (s *State) LANNetns() string    { return s.Name + "-lan" }
func (s *State) ClientNetns() string { return s.Name + "-client" }

// ControlPlaneNetns names the namespace of etcd, the apiserver, the
// controllers and the load-balancer pool controller.
func (s *State) ControlPlaneNetns() string { return s.Name + "-controlplane" }

// PodNetns names the namespace of a pod. Kubernetes names are at most 253
// characters, a file name 255: long names are cut and made unique by uid.
func (s *State) PodNetns(namespace, pod, uid string) string {
	name := fmt.Sprintf("%s-pod-%s-%s", s.Name, namespace, pod)
	if len(name) > 200 {
		name = fmt.Sprintf("%s-pod-%.100s-%s", s.Name, name, uid)
	}
	return name
}

// Node returns the node called name.
func (s *State) Node(name string) (Node, bool) {
	for _, n := range s.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return Node{}, false
}

// ErrNotUp is returned by Load when the lab has no state.
var ErrNotUp = errors.New("lab is not up")

// Load reads the state of the lab called name.
func Load(name string) (*State, error) {
	data, err := os.ReadFile(filepath.Join(StateRoot, name, "lab.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("lab %q: %w (run: svcproxy lab up)", name, ErrNotUp)
	}
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("lab %q: %s: %w", name, filepath.Join(StateRoot, name, "lab.json"), err)
	}
	return &s, nil
}

// save writes the state to <Dir>/lab.json.
func (s *State) save() error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(s.Dir, "lab.json"), data, 0o644)
}

// Gateway is the node's address on every pod veth.
func (n Node) Gateway() netip.Addr { return nsrun.NthAddr(n.PodCIDR, 1) }

// PodIP returns the i-th pod address of the node (i from 0).
func (n Node) PodIP(i int) netip.Addr { return nsrun.NthAddr(n.PodCIDR, i+2) }

// GatewayV6 is the node's IPv6 address on every pod veth.
func (n Node) GatewayV6() netip.Addr { return nsrun.NthAddr(n.PodCIDRv6, 1) }

// PodIPv6 returns the IPv6 address of the pod whose IPv4 address is ip:
// the same host number in the node's IPv6 pod CIDR. It is invalid if ip is
// not an IPv4 address.
func (n Node) PodIPv6(ip netip.Addr) netip.Addr {
	if !ip.Is4() {
		return netip.Addr{}
	}
	return nsrun.NthAddr(n.PodCIDRv6, int(ip.As4()[3]))
}
