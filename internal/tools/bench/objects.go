// Package bench measures svcproxy's dataplanes in a real kernel: cold full
// syncs and single changes at scale, and memory. It runs inside a network
// namespace it creates and removes, and prints a table.
package bench

import (
	"fmt"
	"net/netip"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"

	"github.com/svcproxy/svcproxy/internal/testkit/objects"
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
	opts := []objects.ServiceOption{
		objects.ClusterIP(addr4(netip.MustParseAddr("10.96.0.0"), uint32(i+1)).String()),
		objects.Port("http", v1.ProtocolTCP, 80, 0),
	}
	if i%10 == 0 {
		opts = append(opts, objects.NodePort(int32(30000+i/10%2768)))
	}
	return objects.Service("bench", fmt.Sprintf("svc-%d", i), opts...)
}

// slice builds Service i's EndpointSlice; gen shifts the addresses so that
// a new generation replaces one endpoint.
func slice(i, eps, gen int) *discovery.EndpointSlice {
	var endpoints []discovery.Endpoint
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
		endpoints = append(endpoints, objects.Endpoint(ip.String(), objects.OnNode(node), objects.Ready(true)))
	}
	return objects.Slice("bench", fmt.Sprintf("svc-%d-abc", i), fmt.Sprintf("svc-%d", i), discovery.AddressTypeIPv4,
		[]discovery.EndpointPort{objects.EndpointPort("http", "", 8080)}, endpoints...)
}

func addr4(base netip.Addr, off uint32) netip.Addr {
	b := base.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += off
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
