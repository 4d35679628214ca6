package ui

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"

	"github.com/svcproxy/svcproxy/internal/tools/lab"
)

// Snapshot is what the page draws, sent as JSON on every change.
type Snapshot struct {
	Lab      string    `json:"lab"`
	Mode     string    `json:"mode"`
	At       time.Time `json:"at"`
	ClientIP string    `json:"clientIP"`
	LBPool   string    `json:"lbPool"`
	// Window is how many seconds EndpointView.Window counts.
	Window   int           `json:"window"`
	Nodes    []NodeView    `json:"nodes"`
	Services []ServiceView `json:"services"`
	// Routes are the load balancer's: each address it routes, to the
	// nodes that passed its health check.
	Routes []Route `json:"routes"`
	// Pods elsewhere: scheduled on no node of the lab, or not yet.
	Unscheduled []PodView `json:"unscheduled"`
}

// NodeView is one node: what the API says and what its svcproxy answers.
type NodeView struct {
	Name      string    `json:"name"`
	Zone      string    `json:"zone"`
	IP        string    `json:"ip"`
	IPv6      string    `json:"ipv6,omitempty"`
	PodCIDR   string    `json:"podCIDR"`
	Ready     bool      `json:"ready"`
	Proxy     ProxyView `json:"proxy"`
	Pods      []PodView `json:"pods"`
	Conntrack string    `json:"conntrackError,omitempty"`
	// HealthChecks are the answers of the node's health-check node ports,
	// one per externalTrafficPolicy Local Service.
	HealthChecks []HealthCheckView `json:"healthChecks"`
}

// ProxyView is the node's svcproxy as a load balancer and `svcproxy
// status` see it.
type ProxyView struct {
	Healthz  int       `json:"healthz"` // /healthz status code; 0: no answer
	LastSync time.Time `json:"lastSync"`
	Took     string    `json:"took,omitempty"`
	Full     bool      `json:"full"`
	Syncs    int       `json:"syncs"`
	Failures int       `json:"failures"`
	Error    string    `json:"error,omitempty"`
}

// HealthCheckView is one health-check node port's answer on one node.
type HealthCheckView struct {
	Service        string `json:"service"`
	Port           int    `json:"port"`
	Status         int    `json:"status"` // 0: no answer
	LocalEndpoints int    `json:"localEndpoints"`
	Error          string `json:"error,omitempty"`
}

// PodView is one pod.
type PodView struct {
	Namespace   string `json:"namespace"`
	Name        string `json:"name"`
	IP          string `json:"ip,omitempty"`
	IPv6        string `json:"ipv6,omitempty"`
	Phase       string `json:"phase"`
	Ready       bool   `json:"ready"`
	Terminating bool   `json:"terminating"`
	// Window is the new connections svcproxy sent to any of the pod's
	// endpoints over the last Snapshot.Window seconds.
	Window int `json:"window"`
}

// ServiceView is one Service and its endpoints.
type ServiceView struct {
	Namespace           string         `json:"namespace"`
	Name                string         `json:"name"`
	Type                string         `json:"type"`
	ClusterIPs          []string       `json:"clusterIPs"`
	ExternalIPs         []string       `json:"externalIPs"`
	LoadBalancerIPs     []string       `json:"loadBalancerIPs"`
	InternalPolicy      string         `json:"internalTrafficPolicy"`
	ExternalPolicy      string         `json:"externalTrafficPolicy,omitempty"`
	HealthCheckNodePort int            `json:"healthCheckNodePort,omitempty"`
	Ports               []PortView     `json:"ports"`
	Endpoints           []EndpointView `json:"endpoints"`
}

// PortView is one port of a Service.
type PortView struct {
	Name     string `json:"name,omitempty"`
	Protocol string `json:"protocol"`
	Port     int    `json:"port"`
	NodePort int    `json:"nodePort,omitempty"`
}

// EndpointView is one endpoint of a Service (from its EndpointSlices) and
// the new connections svcproxy sent it, read from the nodes' conntrack
// tables.
type EndpointView struct {
	Key         string `json:"key"` // "TCP 10.244.1.3:3000", as Flow.EndpointKey
	Pod         string `json:"pod,omitempty"`
	Node        string `json:"node,omitempty"`
	Ready       bool   `json:"ready"`
	Serving     bool   `json:"serving"`
	Terminating bool   `json:"terminating"`
	// Window counts new connections over the last Snapshot.Window
	// seconds, Total since the page started; Recent per second, oldest
	// first.
	Window int   `json:"window"`
	Total  int   `json:"total"`
	Recent []int `json:"recent"`
}

// Route is a load-balancer address and the nodes it sends traffic to.
type Route struct {
	Address string   `json:"address"`
	Nodes   []string `json:"nodes"`
}

// apiObjects are the cluster's objects, as the informers hold them.
type apiObjects struct {
	nodes    []*corev1.Node
	pods     []*corev1.Pod
	services []*corev1.Service
	slices   []*discovery.EndpointSlice
}

// probes are what the nodes answered on the last tick.
type probes struct {
	proxy  map[string]ProxyView         // by node
	health map[string][]HealthCheckView // by node
	errs   map[string]string            // conntrack errors by node
	routes []Route
}

// build makes the snapshot from the objects, the probes and the traffic.
func build(st *lab.State, obj apiObjects, pr probes, tr *Traffic, at time.Time) Snapshot {
	s := Snapshot{
		Lab: st.Name, Mode: st.ProxyMode, At: at, ClientIP: lab.ClientIP.String(), LBPool: lab.LBPool.String(),
		Window: tr.WindowSeconds(), Routes: pr.routes, Unscheduled: []PodView{},
	}
	if s.Routes == nil {
		s.Routes = []Route{}
	}
	byName := map[string]*corev1.Node{}
	for _, n := range obj.nodes {
		byName[n.Name] = n
	}
	podsByNode := map[string][]PodView{}
	for _, p := range sortedPods(obj.pods) {
		v := podView(p, tr)
		if _, ok := st.Node(p.Spec.NodeName); ok {
			podsByNode[p.Spec.NodeName] = append(podsByNode[p.Spec.NodeName], v)
		} else {
			s.Unscheduled = append(s.Unscheduled, v)
		}
	}
	for _, n := range st.Nodes {
		nv := NodeView{
			Name: n.Name, Zone: n.Zone, IP: n.IP.String(), IPv6: n.IPv6.String(), PodCIDR: n.PodCIDR.String(),
			Proxy: pr.proxy[n.Name], Pods: podsByNode[n.Name], HealthChecks: pr.health[n.Name], Conntrack: pr.errs[n.Name],
		}
		if nv.Pods == nil {
			nv.Pods = []PodView{}
		}
		if nv.HealthChecks == nil {
			nv.HealthChecks = []HealthCheckView{}
		}
		if node := byName[n.Name]; node != nil {
			nv.Ready = lab.NodeReady(node)
			nv.Zone = node.Labels[corev1.LabelTopologyZone]
			nv.PodCIDR = strings.Join(node.Spec.PodCIDRs, ", ")
		}
		s.Nodes = append(s.Nodes, nv)
	}
	s.Services = serviceViews(obj, tr)
	return s
}

func sortedPods(pods []*corev1.Pod) []*corev1.Pod {
	out := slices.Clone(pods)
	slices.SortFunc(out, func(a, b *corev1.Pod) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	return out
}

func podView(p *corev1.Pod, tr *Traffic) PodView {
	v := PodView{Namespace: p.Namespace, Name: p.Name, Phase: string(p.Status.Phase),
		Ready: lab.PodReady(p), Terminating: p.DeletionTimestamp != nil}
	for _, ip := range p.Status.PodIPs {
		a, err := netip.ParseAddr(ip.IP)
		switch {
		case err != nil:
		case a.Is4():
			v.IP = ip.IP
		default:
			v.IPv6 = ip.IP
		}
		if err == nil {
			v.Window += tr.WindowOfAddr(a)
		}
	}
	return v
}

// serviceViews describes every Service with the endpoints of its slices.
func serviceViews(obj apiObjects, tr *Traffic) []ServiceView {
	slicesOf := map[string][]*discovery.EndpointSlice{}
	for _, sl := range obj.slices {
		name := sl.Labels[discovery.LabelServiceName]
		key := sl.Namespace + "/" + name
		slicesOf[key] = append(slicesOf[key], sl)
	}
	out := []ServiceView{}
	for _, svc := range obj.services {
		out = append(out, serviceView(svc, slicesOf[svc.Namespace+"/"+svc.Name], tr))
	}
	slices.SortFunc(out, func(a, b ServiceView) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	return out
}

func serviceView(svc *corev1.Service, sls []*discovery.EndpointSlice, tr *Traffic) ServiceView {
	v := ServiceView{
		Namespace: svc.Namespace, Name: svc.Name, Type: string(svc.Spec.Type),
		ClusterIPs: nonNil(svc.Spec.ClusterIPs), ExternalIPs: nonNil(svc.Spec.ExternalIPs), LoadBalancerIPs: []string{},
		InternalPolicy: "Cluster", HealthCheckNodePort: int(svc.Spec.HealthCheckNodePort), Endpoints: []EndpointView{},
	}
	if p := svc.Spec.InternalTrafficPolicy; p != nil {
		v.InternalPolicy = string(*p)
	}
	if svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer || len(svc.Spec.ExternalIPs) > 0 {
		v.ExternalPolicy = string(svc.Spec.ExternalTrafficPolicy)
	}
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if in.IP != "" {
			v.LoadBalancerIPs = append(v.LoadBalancerIPs, in.IP)
		}
	}
	for _, p := range svc.Spec.Ports {
		v.Ports = append(v.Ports, PortView{Name: p.Name, Protocol: string(p.Protocol), Port: int(p.Port), NodePort: int(p.NodePort)})
	}
	if v.Ports == nil {
		v.Ports = []PortView{}
	}
	for _, sl := range sls {
		v.Endpoints = append(v.Endpoints, endpointViews(sl, tr)...)
	}
	slices.SortFunc(v.Endpoints, func(a, b EndpointView) int { return strings.Compare(a.Key, b.Key) })
	return v
}

// endpointViews lists a slice's endpoints, one per address and port.
func endpointViews(sl *discovery.EndpointSlice, tr *Traffic) []EndpointView {
	var out []EndpointView
	for _, ep := range sl.Endpoints {
		for _, port := range sl.Ports {
			if port.Port == nil {
				continue
			}
			proto := corev1.ProtocolTCP
			if port.Protocol != nil {
				proto = *port.Protocol
			}
			for _, addr := range ep.Addresses {
				a, err := netip.ParseAddr(addr)
				if err != nil {
					continue
				}
				key := EndpointKey(string(proto), netip.AddrPortFrom(a, uint16(*port.Port)))
				v := EndpointView{Key: key, Ready: isTrue(ep.Conditions.Ready, true), Serving: isTrue(ep.Conditions.Serving, true),
					Terminating: isTrue(ep.Conditions.Terminating, false)}
				if ep.NodeName != nil {
					v.Node = *ep.NodeName
				}
				if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" {
					v.Pod = ep.TargetRef.Namespace + "/" + ep.TargetRef.Name
				}
				v.Window, v.Total, v.Recent = tr.Of(key)
				out = append(out, v)
			}
		}
	}
	return out
}

// isTrue reads an EndpointConditions field; nil means def, as the API
// documents (ready and serving unknown count as true).
func isTrue(b *bool, def bool) bool {
	if b == nil {
		return def
	}
	return *b
}

func nonNil(ss []string) []string {
	if ss == nil {
		return []string{}
	}
	return ss
}

// EndpointKey names an endpoint as the page and the traffic counts do:
// "TCP 10.244.1.3:3000".
func EndpointKey(protocol string, ap netip.AddrPort) string {
	return protocol + " " + ap.String()
}
