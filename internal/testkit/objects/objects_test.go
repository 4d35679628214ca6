package objects

import (
	"reflect"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
)

// The rules callers rely on to build exactly the object they mean.
func TestBuilders(t *testing.T) {
	lb := Service("ns", "a", ClusterIPs("10.96.0.1", "fd00::1"), IPFamilies(""), Port("", v1.ProtocolTCP, 80, 0),
		LoadBalancerIngress("203.0.113.1", ""), NodePort(30080))
	if lb.Spec.Type != v1.ServiceTypeLoadBalancer || lb.Spec.Ports[0].NodePort != 30080 {
		t.Errorf("NodePort on a LoadBalancer: type %s, ports %v", lb.Spec.Type, lb.Spec.Ports)
	}
	if want := []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol}; !reflect.DeepEqual(lb.Spec.IPFamilies, want) || lb.Spec.IPFamilyPolicy != nil {
		t.Errorf("IPFamilies(\"\"): %v, policy %v; want %v, no policy", lb.Spec.IPFamilies, lb.Spec.IPFamilyPolicy, want)
	}
	if ing := lb.Status.LoadBalancer.Ingress[0]; ing.IPMode != nil {
		t.Errorf("ingress mode \"\" set to %s", *ing.IPMode)
	}
	if p := EndpointPort("", "", 8080); p.Name == nil || *p.Name != "" || p.Protocol != nil {
		t.Errorf("EndpointPort(\"\", \"\", 8080) = %+v, want name \"\" and no protocol", p)
	}
	e := Endpoint("10.244.1.2", Ready(false), HintZones())
	if e.Conditions.Serving != nil || e.Hints == nil || e.Hints.ForZones == nil {
		t.Errorf("Endpoint = %+v, want serving unset and an empty zone hint list", e)
	}
	if n := Node("node1", ""); n.Labels == nil || len(n.Labels) != 0 {
		t.Errorf("Node without a zone: labels %v, want empty and not nil", n.Labels)
	}
	if s := Slice("ns", "a-1", "a", discovery.AddressTypeIPv4, nil); s.Labels[discovery.LabelServiceName] != "a" || s.Endpoints != nil {
		t.Errorf("Slice = %+v", s)
	}
}
