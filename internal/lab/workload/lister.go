package workload

import (
	"net/netip"
	"slices"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
)

// informerLister answers from the Services and EndpointSlices informers.
type informerLister struct {
	services corelisters.ServiceLister
	slices   discoverylisters.EndpointSliceLister
}

// NewInformerLister answers Lookup from factory's Services and, for
// headless Services, EndpointSlices informers. It registers them, so call
// it before factory.Start, and wait for the caches to sync before serving.
func NewInformerLister(factory informers.SharedInformerFactory) ServiceLister {
	return informerLister{
		services: factory.Core().V1().Services().Lister(),
		slices:   factory.Discovery().V1().EndpointSlices().Lister(),
	}
}

// Lookup returns the Service's ClusterIPs or, if it is headless, its ready
// endpoints' addresses (all of them if it publishes unready addresses). An
// ExternalName Service exists but has no address here.
func (l informerLister) Lookup(namespace, name string) ([]netip.Addr, bool) {
	svc, err := l.services.Services(namespace).Get(name)
	if err != nil {
		return nil, false
	}
	if svc.Spec.ClusterIP != v1.ClusterIPNone {
		return parseAddrs(clusterIPs(svc)), true
	}
	return l.endpoints(svc), true
}

func clusterIPs(svc *v1.Service) []string {
	if len(svc.Spec.ClusterIPs) == 0 && svc.Spec.ClusterIP != "" {
		return []string{svc.Spec.ClusterIP}
	}
	return svc.Spec.ClusterIPs
}

// endpoints lists the addresses behind a headless Service, sorted and
// without duplicates.
func (l informerLister) endpoints(svc *v1.Service) []netip.Addr {
	selector := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: svc.Name})
	list, err := l.slices.EndpointSlices(svc.Namespace).List(selector)
	if err != nil {
		return nil
	}
	var addrs []string
	for _, slice := range list {
		for _, ep := range slice.Endpoints {
			if svc.Spec.PublishNotReadyAddresses || ready(ep) {
				addrs = append(addrs, ep.Addresses...)
			}
		}
	}
	return parseAddrs(addrs)
}

// ready reads an endpoint's Ready condition; unset means ready.
func ready(ep discoveryv1.Endpoint) bool {
	return ep.Conditions.Ready == nil || *ep.Conditions.Ready
}

// parseAddrs parses IP addresses, skipping anything else, sorted and
// without duplicates.
func parseAddrs(ss []string) []netip.Addr {
	var addrs []netip.Addr
	for _, s := range ss {
		if a, err := netip.ParseAddr(s); err == nil {
			addrs = append(addrs, a.Unmap())
		}
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	return slices.Compact(addrs)
}
