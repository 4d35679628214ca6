// Package objects builds Kubernetes Service, EndpointSlice and Node objects
// for tests, fixtures and benchmarks.
//
// A builder sets only what its arguments and options say, so the objects are
// exactly what a test means them to be: Service gives a ClusterIP Service
// with no addresses and no ports, Endpoint an endpoint with no conditions.
// Options apply in order; a caller's own func(*v1.Service) or
// func(*discovery.Endpoint) serves as an option too.
package objects

import (
	"net/netip"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Ptr returns a pointer to a copy of v.
func Ptr[T any](v T) *T { return &v }

// ServiceOption changes a Service under construction.
type ServiceOption func(*v1.Service)

// Service returns a ClusterIP Service namespace/name changed by opts.
func Service(namespace, name string, opts ...ServiceOption) *v1.Service {
	s := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec:       v1.ServiceSpec{Type: v1.ServiceTypeClusterIP},
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Type sets the Service type.
func Type(t v1.ServiceType) ServiceOption { return func(s *v1.Service) { s.Spec.Type = t } }

// ClusterIP sets spec.clusterIP alone, leaving spec.clusterIPs unset.
func ClusterIP(ip string) ServiceOption { return func(s *v1.Service) { s.Spec.ClusterIP = ip } }

// ClusterIPs sets spec.clusterIPs, and spec.clusterIP to the first of them.
func ClusterIPs(ips ...string) ServiceOption {
	return func(s *v1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = ips[0], ips }
}

// IPFamilies sets spec.ipFamilies to the families of the ClusterIPs set so
// far, in order, and spec.ipFamilyPolicy to policy ("" leaves it unset).
func IPFamilies(policy v1.IPFamilyPolicy) ServiceOption {
	return func(s *v1.Service) {
		s.Spec.IPFamilies = nil
		for _, ip := range s.Spec.ClusterIPs {
			f := v1.IPv4Protocol
			if a, err := netip.ParseAddr(ip); err == nil && a.Is6() {
				f = v1.IPv6Protocol
			}
			s.Spec.IPFamilies = append(s.Spec.IPFamilies, f)
		}
		if policy != "" {
			s.Spec.IPFamilyPolicy = &policy
		}
	}
}

// Port adds a port; name "" is the unnamed port, nodePort 0 none. It leaves
// the Service type alone.
func Port(name string, proto v1.Protocol, port, nodePort int32) ServiceOption {
	return func(s *v1.Service) {
		s.Spec.Ports = append(s.Spec.Ports, v1.ServicePort{Name: name, Protocol: proto, Port: port, NodePort: nodePort})
	}
}

// NodePort sets nodePort on every port added so far and makes the Service a
// NodePort one, unless it is a LoadBalancer.
func NodePort(nodePort int32) ServiceOption {
	return func(s *v1.Service) {
		if s.Spec.Type != v1.ServiceTypeLoadBalancer {
			s.Spec.Type = v1.ServiceTypeNodePort
		}
		for i := range s.Spec.Ports {
			s.Spec.Ports[i].NodePort = nodePort
		}
	}
}

// ExternalIPs sets spec.externalIPs.
func ExternalIPs(ips ...string) ServiceOption {
	return func(s *v1.Service) { s.Spec.ExternalIPs = ips }
}

// LoadBalancerIngress makes the Service a LoadBalancer and adds a
// load-balancer ingress IP with mode ("" leaves ipMode unset).
func LoadBalancerIngress(ip string, mode v1.LoadBalancerIPMode) ServiceOption {
	return func(s *v1.Service) {
		s.Spec.Type = v1.ServiceTypeLoadBalancer
		ing := v1.LoadBalancerIngress{IP: ip}
		if mode != "" {
			ing.IPMode = &mode
		}
		s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, ing)
	}
}

// SourceRanges sets spec.loadBalancerSourceRanges.
func SourceRanges(cidrs ...string) ServiceOption {
	return func(s *v1.Service) { s.Spec.LoadBalancerSourceRanges = cidrs }
}

// ExternalTrafficPolicyLocal sets externalTrafficPolicy Local and
// healthCheckNodePort (0: none, as externalIPs-only Services have).
func ExternalTrafficPolicyLocal(healthCheckNodePort int32) ServiceOption {
	return func(s *v1.Service) {
		s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
		s.Spec.HealthCheckNodePort = healthCheckNodePort
	}
}

// ExternalTrafficPolicyCluster sets externalTrafficPolicy Cluster explicitly,
// as the API server defaults it for Services with node ports.
func ExternalTrafficPolicyCluster() ServiceOption {
	return func(s *v1.Service) { s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyCluster }
}

// InternalTrafficPolicyLocal sets internalTrafficPolicy Local.
func InternalTrafficPolicyLocal() ServiceOption {
	return func(s *v1.Service) { s.Spec.InternalTrafficPolicy = Ptr(v1.ServiceInternalTrafficPolicyLocal) }
}

// InternalTrafficPolicyCluster sets internalTrafficPolicy Cluster explicitly,
// as the API server defaults it.
func InternalTrafficPolicyCluster() ServiceOption {
	return func(s *v1.Service) { s.Spec.InternalTrafficPolicy = Ptr(v1.ServiceInternalTrafficPolicyCluster) }
}

// Affinity sets sessionAffinity ClientIP with a timeout in seconds; 0 leaves
// the timeout unset (the API server would default it to 10800).
func Affinity(timeout int32) ServiceOption {
	return func(s *v1.Service) {
		s.Spec.SessionAffinity = v1.ServiceAffinityClientIP
		if timeout != 0 {
			s.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: &timeout}}
		}
	}
}

// Label sets a label.
func Label(k, v string) ServiceOption {
	return func(s *v1.Service) {
		if s.Labels == nil {
			s.Labels = map[string]string{}
		}
		s.Labels[k] = v
	}
}

// Annotation sets an annotation on the Service.
func Annotation(k, v string) ServiceOption {
	return func(s *v1.Service) {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[k] = v
	}
}

// Slice returns the EndpointSlice namespace/name of Service service.
func Slice(namespace, name, service string, addressType discovery.AddressType, ports []discovery.EndpointPort, eps ...discovery.Endpoint) *discovery.EndpointSlice {
	return &discovery.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: namespace, Name: name,
			Labels: map[string]string{discovery.LabelServiceName: service},
		},
		AddressType: addressType,
		Ports:       ports,
		Endpoints:   eps,
	}
}

// EndpointPort is one EndpointSlice port. Name "" is the unnamed port (the
// name is set, to ""); proto "" leaves the protocol unset (TCP).
func EndpointPort(name string, proto v1.Protocol, port int32) discovery.EndpointPort {
	p := discovery.EndpointPort{Name: &name, Port: &port}
	if proto != "" {
		p.Protocol = &proto
	}
	return p
}

// EndpointOption changes an endpoint under construction.
type EndpointOption func(*discovery.Endpoint)

// Endpoint is an endpoint with the one address ip, changed by opts. Its
// conditions are unset, which consumers read as ready.
func Endpoint(ip string, opts ...EndpointOption) discovery.Endpoint {
	e := discovery.Endpoint{Addresses: []string{ip}}
	for _, o := range opts {
		o(&e)
	}
	return e
}

// OnNode sets the endpoint's node.
func OnNode(node string) EndpointOption { return func(e *discovery.Endpoint) { e.NodeName = &node } }

// InZone sets the endpoint's zone.
func InZone(zone string) EndpointOption { return func(e *discovery.Endpoint) { e.Zone = &zone } }

// Conditions sets all three conditions.
func Conditions(ready, serving, terminating bool) EndpointOption {
	return func(e *discovery.Endpoint) {
		e.Conditions = discovery.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating}
	}
}

// Ready sets the ready condition alone, serving and terminating unset.
func Ready(ready bool) EndpointOption {
	return func(e *discovery.Endpoint) { e.Conditions = discovery.EndpointConditions{Ready: &ready} }
}

// HintZones sets the zones the endpoint is hinted for.
func HintZones(zones ...string) EndpointOption {
	return func(e *discovery.Endpoint) {
		hints(e).ForZones = named(zones, func(z string) discovery.ForZone { return discovery.ForZone{Name: z} })
	}
}

// HintNodes sets the nodes the endpoint is hinted for.
func HintNodes(nodes ...string) EndpointOption {
	return func(e *discovery.Endpoint) {
		hints(e).ForNodes = named(nodes, func(n string) discovery.ForNode { return discovery.ForNode{Name: n} })
	}
}

// named maps names to hints, never nil.
func named[T any](names []string, hint func(string) T) []T {
	out := make([]T, len(names))
	for i, n := range names {
		out[i] = hint(n)
	}
	return out
}

func hints(e *discovery.Endpoint) *discovery.EndpointHints {
	if e.Hints == nil {
		e.Hints = &discovery.EndpointHints{}
	}
	return e.Hints
}

// Node returns the Node name, labelled with its topology zone unless zone is
// "". Its labels are never nil, so a caller may add more.
func Node(name, zone string) *v1.Node {
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}}}
	if zone != "" {
		n.Labels[v1.LabelTopologyZone] = zone
	}
	return n
}
