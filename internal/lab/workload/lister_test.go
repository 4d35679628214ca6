package workload

import (
	"net/netip"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
)

func service(namespace, name string, spec v1.ServiceSpec) *v1.Service {
	return &v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}, Spec: spec}
}

func slice(namespace, name, service string, family discoveryv1.AddressType, endpoints ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: namespace, Name: name,
			Labels: map[string]string{discoveryv1.LabelServiceName: service},
		},
		AddressType: family,
		Endpoints:   endpoints,
	}
}

// endpoint is an endpoint whose Ready condition is ready, or unset if nil.
func endpoint(addr string, ready *bool) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: ready}}
}

func TestInformerLister(t *testing.T) {
	yes, no := new(true), new(false)
	headless := v1.ServiceSpec{ClusterIP: v1.ClusterIPNone, ClusterIPs: []string{v1.ClusterIPNone}}
	objects := []runtime.Object{
		service("default", "backend-service", v1.ServiceSpec{ClusterIP: "10.96.5.81", ClusterIPs: []string{"10.96.5.81"}}),
		service("default", "dual", v1.ServiceSpec{ClusterIP: "fd00:10:96::20", ClusterIPs: []string{"fd00:10:96::20", "10.96.0.20"}}),
		service("default", "old", v1.ServiceSpec{ClusterIP: "10.96.0.30"}), // written before ClusterIPs
		service("default", "external", v1.ServiceSpec{Type: v1.ServiceTypeExternalName, ExternalName: "example.com"}),
		service("default", "db", headless),
		slice("default", "db-v4", "db", discoveryv1.AddressTypeIPv4,
			endpoint("10.244.2.4", nil), endpoint("10.244.1.2", yes), endpoint("10.244.1.3", no)),
		slice("default", "db-v6", "db", discoveryv1.AddressTypeIPv6, endpoint("fd00:244::2", yes)),
		slice("default", "db-v4-again", "db", discoveryv1.AddressTypeIPv4, endpoint("10.244.1.2", yes)),
		slice("default", "cache-v4", "cache", discoveryv1.AddressTypeIPv4, endpoint("10.244.9.9", yes)),
		slice("other", "db-v4", "db", discoveryv1.AddressTypeIPv4, endpoint("10.244.8.8", yes)),
		service("default", "starting", v1.ServiceSpec{ClusterIP: v1.ClusterIPNone, PublishNotReadyAddresses: true}),
		slice("default", "starting-v4", "starting", discoveryv1.AddressTypeIPv4, endpoint("10.244.3.3", no)),
		service("default", "empty", headless),
		service("other", "db", headless),
	}
	factory := informers.NewSharedInformerFactory(fake.NewClientset(objects...), 0)
	lister := NewInformerLister(factory)
	stop := make(chan struct{})
	factory.Start(stop)
	defer factory.Shutdown() // after close(stop): Shutdown waits for the informers
	defer close(stop)
	for typ, synced := range factory.WaitForCacheSync(stop) {
		if !synced {
			t.Fatalf("%v not synced", typ)
		}
	}

	for _, tc := range []struct {
		namespace, name string
		want            []netip.Addr
		ok              bool
	}{
		{"default", "backend-service", addrs("10.96.5.81"), true},
		{"default", "dual", addrs("10.96.0.20", "fd00:10:96::20"), true},
		{"default", "old", addrs("10.96.0.30"), true},
		{"default", "external", nil, true},
		{"default", "db", addrs("10.244.1.2", "10.244.2.4", "fd00:244::2"), true}, // ready, once each
		{"other", "db", addrs("10.244.8.8"), true},
		{"default", "starting", addrs("10.244.3.3"), true},
		{"default", "empty", nil, true},
		{"default", "cache", nil, false}, // slices without a Service
		{"default", "missing", nil, false},
		{"nowhere", "backend-service", nil, false},
	} {
		got, ok := lister.Lookup(tc.namespace, tc.name)
		if ok != tc.ok || !slices.Equal(got, tc.want) {
			t.Errorf("Lookup(%s, %s) = %v, %v; want %v, %v", tc.namespace, tc.name, got, ok, tc.want, tc.ok)
		}
	}
}
