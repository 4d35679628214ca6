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
	"slices"
	"strings"

	"github.com/svcproxy/svcproxy/internal/addrplan"
)

// StateRoot holds one directory per lab.
const StateRoot = "/run/svcproxy-lab"

// The address plan, package addrplan's (the tests' too). Every address
// lives only inside the lab's namespaces; the external ones come from the
// documentation ranges (RFC 5737, RFC 3849). Node N is LAN .N and LANv6
// ::N, its pods 10.244.N.0/24 and fd00:10:244:N::/64, a pod's IPv6 ending
// as its IPv4 does; the client is .100 and ::100. The control plane and the
// load-balancer pool are IPv4 only.
var (
	LAN            = addrplan.LANv4
	LANv6          = addrplan.LANv6
	ClientIP       = addrplan.ClientV4
	ClientIPv6     = addrplan.ClientV6
	ControlPlaneIP = addrplan.ControlPlane // the apiserver, :6443: default/kubernetes's endpoint
	ClusterCIDR    = addrplan.ClusterCIDRv4
	ClusterCIDRv6  = addrplan.ClusterCIDRv6
	ServiceCIDR    = addrplan.ServiceCIDRv4.String() + "," + addrplan.ServiceCIDRv6.String()
	KubernetesIP   = addrplan.KubernetesIP   // the kubernetes Service (the API server)
	DNSIP          = addrplan.DNSIP          // the kube-dns Service
	LBPool         = addrplan.ExternalPoolv4 // LoadBalancer ingress IPs
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
	ProxyMode  string // one of ProxyModes
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

// ProxyModes are the modes the nodes' svcproxy can run in. ipvs needs a
// kernel with IPVS (checkMachine says so when it has none).
var ProxyModes = []string{"nftables", "iptables", "ipvs"}

var labName = regexp.MustCompile(`^[a-z][a-z0-9]{0,9}$`)

// NewState plans a lab of n nodes; it creates nothing.
func NewState(name string, n int, self, proxyMode string) (*State, error) {
	if !labName.MatchString(name) {
		return nil, fmt.Errorf("lab name %q: want 1-10 of [a-z0-9], starting with a letter", name)
	}
	if n < 1 || n > 20 {
		return nil, fmt.Errorf("nodes: want 1 to 20, got %d", n)
	}
	if !slices.Contains(ProxyModes, proxyMode) {
		return nil, fmt.Errorf("proxy mode %q: want one of %s", proxyMode, strings.Join(ProxyModes, ", "))
	}
	s := &State{Name: name, Dir: filepath.Join(StateRoot, name), Self: self, ProxyMode: proxyMode}
	s.Kubeconfig = filepath.Join(s.Dir, "controlplane", "kubeconfig")
	for i := 1; i <= n; i++ {
		a := addrplan.NodeN(i)
		s.Nodes = append(s.Nodes, Node{
			Name: fmt.Sprintf("node%d", i),
			Zone: Zones[(i-1)%len(Zones)],
			IP:   a.LANv4, PodCIDR: a.PodCIDRv4,
			IPv6: a.LANv6, PodCIDRv6: a.PodCIDRv6,
			Netns: fmt.Sprintf("%s-node%d", name, i),
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

// plan is where the node sits in the address plan.
func (n Node) plan() addrplan.Node {
	return addrplan.Node{LANv4: n.IP, LANv6: n.IPv6, PodCIDRv4: n.PodCIDR, PodCIDRv6: n.PodCIDRv6}
}

// Gateway is the node's address on every pod veth.
func (n Node) Gateway() netip.Addr { return n.plan().GatewayV4() }

// PodIP returns the i-th pod address of the node (i from 0).
func (n Node) PodIP(i int) netip.Addr { return n.plan().PodV4(i) }

// GatewayV6 is the node's IPv6 address on every pod veth.
func (n Node) GatewayV6() netip.Addr { return n.plan().GatewayV6() }

// PodIPv6 returns the IPv6 address of the pod whose IPv4 address is ip:
// the same host number in the node's IPv6 pod CIDR. It is invalid if ip is
// not an IPv4 address.
func (n Node) PodIPv6(ip netip.Addr) netip.Addr {
	if !ip.Is4() {
		return netip.Addr{}
	}
	return addrplan.Nth(n.PodCIDRv6, int(ip.As4()[3]))
}
