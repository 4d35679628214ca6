// Package bench measures svcproxy's dataplanes in a real kernel: cold full
// syncs and single changes at scale, and memory. It runs inside a network
// namespace it creates and removes, and prints a table.
package bench

import (
	"fmt"
	"net/netip"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// workload generates n Services with eps endpoints each: every tenth one a
// NodePort, one endpoint in ten on this node. Addresses are unique: ClusterIPs
// from 10.96.0.0/16, endpoints from 10.128.0.0/9.
func workload(n, eps int) ([]*v1.Service, []*discovery.EndpointSlice) {
	svcs := make([]*v1.Service, 0, n)
	slices := make([]*discovery.EndpointSlice, 0, n)
	for i := 0; i < n; i++ {
		svcs = append(svcs, service(i))
		slices = append(slices, slice(i, eps, 0))
	}
	return svcs, slices
}

// service is Service i: a ClusterIP Service with one port "http", every
// tenth one a NodePort.
func service(i int) *v1.Service {
	svc := newService("bench", fmt.Sprintf("svc-%d", i))
	svc.Spec.ClusterIP = addr4(netip.MustParseAddr("10.96.0.0"), uint32(i+1)).String()
	if i%10 == 0 {
		svc.Spec.Type = v1.ServiceTypeNodePort
		svc.Spec.Ports[0].NodePort = int32(30000 + i/10%2768)
	}
	return svc
}

// slice builds Service i's EndpointSlice; gen shifts the addresses so that
// a new generation replaces one endpoint.
func slice(i, eps, gen int) *discovery.EndpointSlice {
	s := newSlice("bench", fmt.Sprintf("svc-%d-abc", i), fmt.Sprintf("svc-%d", i), "")
	ready := true
	for j := 0; j < eps; j++ {
		node := "other"
		if j == 0 {
			node = "bench-node"
		}
		k := j
		if j == eps-1 {
			k += gen * eps // the last endpoint moves with each generation
		}
		ip := addr4(netip.MustParseAddr("10.128.0.0"), uint32(i*eps*64+k+1))
		s.Endpoints = append(s.Endpoints, discovery.Endpoint{Addresses: []string{ip.String()}, NodeName: &node,
			Conditions: discovery.EndpointConditions{Ready: &ready}})
	}
	return s
}

// newService is a ClusterIP Service with one TCP port "http", 80.
func newService(namespace, name string) *v1.Service {
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: v1.ServiceSpec{Type: v1.ServiceTypeClusterIP,
			Ports: []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80}}},
	}
}

// newSlice is an IPv4 EndpointSlice of service with one port "http", 8080
// (protocol unset, or proto), and no endpoints yet.
func newSlice(namespace, name, service string, proto v1.Protocol) *discovery.EndpointSlice {
	port, portName := int32(8080), "http"
	p := discovery.EndpointPort{Name: &portName, Port: &port}
	if proto != "" {
		p.Protocol = &proto
	}
	return &discovery.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: map[string]string{discovery.LabelServiceName: service}},
		AddressType: discovery.AddressTypeIPv4,
		Ports:       []discovery.EndpointPort{p},
	}
}

func addr4(base netip.Addr, off uint32) netip.Addr {
	b := base.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += off
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
