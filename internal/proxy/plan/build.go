package plan

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Labels that take a Service away from this proxy, as in kube-proxy.
const (
	LabelServiceProxyName = "service.kubernetes.io/service-proxy-name"
	LabelHeadless         = "service.kubernetes.io/headless"
)

// Input is everything the plan is a function of.
type Input struct {
	Services []*v1.Service
	Slices   []*discovery.EndpointSlice
	Node     *v1.Node
	Config   Config
}

// Build resolves the whole plan. Objects that fail validation are left out
// and reported, each error naming the object and the field; every other
// Service is planned as usual.
func Build(in Input) (*Plan, []error) {
	t := NewTracker(in.Config)
	t.SetNode(in.Node)
	for _, s := range in.Slices {
		t.SetSlice(s)
	}
	for _, s := range in.Services {
		t.SetService(s)
	}
	p, _ := t.Sync()
	return p, t.Errors()
}

// nodeInfo is what the plan needs to know of this node.
type nodeInfo struct {
	name string
	zone string
}

// buildService plans every port of one Service in every family. It returns
// the ports and the validation errors; when the Service itself is invalid no
// port is returned, so a bad object never half-applies.
func buildService(svc *v1.Service, slices []*discovery.EndpointSlice, node nodeInfo, cfg *Config) ([]*ServicePort, []error) {
	if !handled(svc) {
		return nil, nil
	}
	spec, err := parseService(svc)
	if err != nil {
		return nil, []error{err}
	}
	eps, errs := collectEndpoints(svc, slices, node)
	chosen, from, err := chosenScheduler(svc, cfg)
	if err != nil {
		errs = append(errs, err)
	}
	var out []*ServicePort
	for _, ip := range spec.clusterIPs {
		f := FamilyOf(ip)
		for _, p := range svc.Spec.Ports {
			sp := spec.portFor(f, ip, p, cfg.NodeIPs)
			setEndpoints(sp, eps[epKey{f, p.Name, protocolOf(p.Protocol)}], node)
			resolve(sp, cfg, Scheduling{Chosen: chosen, From: from})
			out = append(out, sp)
		}
	}
	return out, errs
}

// firewall filters the load-balancer IPs by loadBalancerSourceRanges,
// dropping other sources. A node can reach a load-balancer IP that it holds
// itself: its packets to such a VIP loop back with the VIP as their source.
// So, as in kube-proxy, when the ranges admit one of the node's addresses
// they admit the Service's load-balancer IPs too.
func firewall(ranges []netip.Prefix, lbIPs, nodeIPs []netip.Addr) Firewall {
	if len(ranges) == 0 || len(lbIPs) == 0 {
		return Firewall{}
	}
	allow := ranges
	if slices.ContainsFunc(nodeIPs, func(ip netip.Addr) bool { return containsAddr(ranges, ip) }) {
		for _, lb := range lbIPs {
			allow = append(allow, netip.PrefixFrom(lb, lb.BitLen()))
		}
	}
	return Firewall{Allow: allow, Outside: Drop}
}

// handled reports whether the proxy handles the Service at all.
func handled(svc *v1.Service) bool {
	if svc == nil || svc.Spec.Type == v1.ServiceTypeExternalName {
		return false
	}
	if _, ok := svc.Labels[LabelServiceProxyName]; ok {
		return false
	}
	if _, ok := svc.Labels[LabelHeadless]; ok {
		return false
	}
	return svc.Spec.ClusterIP != v1.ClusterIPNone && svc.Spec.ClusterIP != ""
}

// serviceSpec is a validated Service in parsed form.
type serviceSpec struct {
	svc          *v1.Service
	clusterIPs   []netip.Addr
	externalIPs  []netip.Addr
	lbIPs        []netip.Addr
	sourceRanges []netip.Prefix
	affinity     int32
}

// portFor plans the addresses of one port in family f, its policies and
// the outcomes that do not depend on endpoints.
func (s *serviceSpec) portFor(f Family, clusterIP netip.Addr, p v1.ServicePort, nodeIPs []netip.Addr) *ServicePort {
	svc := s.svc
	sp := &ServicePort{
		Key: Key{ServicePortName: ServicePortName{
			Namespace: svc.Namespace, Name: svc.Name, Port: p.Name, Protocol: protocolOf(p.Protocol),
		}, Family: f},
		ClusterIP:       clusterIP,
		Port:            uint16(p.Port),
		NodePort:        uint16(p.NodePort),
		ExternalIPs:     ofFamily(s.externalIPs, f),
		LoadBalancerIPs: ofFamily(s.lbIPs, f),
		AffinitySeconds: s.affinity,
		Inputs: Inputs{
			InternalLocal: svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == v1.ServiceInternalTrafficPolicyLocal,
			ExternalLocal: svc.Spec.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal,
		},
	}
	var ranges []netip.Prefix
	for _, r := range s.sourceRanges {
		if FamilyOf(r.Addr()) == f {
			ranges = append(ranges, r)
		}
	}
	sp.Firewall = firewall(ranges, sp.LoadBalancerIPs, nodeIPs)
	if !sp.HasExternal() {
		// externalTrafficPolicy means nothing without external addresses.
		sp.Inputs.ExternalLocal = false
	}
	if sp.Inputs.ExternalLocal {
		sp.HealthCheck.NodePort = uint16(svc.Spec.HealthCheckNodePort)
	}
	return sp
}

func ofFamily(addrs []netip.Addr, f Family) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs {
		if FamilyOf(a) == f {
			out = append(out, a)
		}
	}
	return out
}

func protocolOf(p v1.Protocol) v1.Protocol {
	if p == "" {
		return v1.ProtocolTCP
	}
	return p
}

// DefaultAffinitySeconds is Kubernetes' default ClientIP affinity timeout.
const DefaultAffinitySeconds = 10800

// parseService checks svc with ValidateService and parses the fields the
// plan reads; an error names the Service and every field at fault.
func parseService(svc *v1.Service) (*serviceSpec, error) {
	if errs := ValidateService(svc); len(errs) > 0 {
		return nil, fmt.Errorf("service %s: %w", objectName(svc.Namespace, svc.Name), errs.ToAggregate())
	}
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 {
		ips = []string{svc.Spec.ClusterIP}
	}
	s := &serviceSpec{svc: svc, clusterIPs: parseAddrs(ips), externalIPs: parseAddrs(svc.Spec.ExternalIPs)}
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		if ing.IP != "" && (ing.IPMode == nil || *ing.IPMode == v1.LoadBalancerIPModeVIP) {
			// Not hostname-only, nor Proxy mode (where the load balancer
			// delivers to the node).
			s.lbIPs = append(s.lbIPs, parseAddrs([]string{ing.IP})...)
		}
	}
	for _, r := range svc.Spec.LoadBalancerSourceRanges {
		if p, err := netip.ParsePrefix(strings.TrimSpace(r)); err == nil {
			s.sourceRanges = append(s.sourceRanges, canonicalPrefix(p))
		}
	}
	s.affinity = affinityOf(svc)
	return s, nil
}

// parseAddrs parses validated addresses as the plan stores them:
// IPv4-mapped IPv6 addresses become IPv4.
func parseAddrs(raw []string) []netip.Addr {
	var out []netip.Addr
	for _, r := range raw {
		if a, err := netip.ParseAddr(r); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// canonicalPrefix masks p and keeps an IPv4-mapped range in its family's
// form, as addresses are: "::ffff:198.51.100.0/120" is 198.51.100.0/24.
func canonicalPrefix(p netip.Prefix) netip.Prefix {
	p = p.Masked()
	if p.Addr().Is4In6() {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p
}

func affinityOf(svc *v1.Service) int32 {
	if svc.Spec.SessionAffinity != v1.ServiceAffinityClientIP {
		return 0
	}
	c := svc.Spec.SessionAffinityConfig
	if c == nil || c.ClientIP == nil || c.ClientIP.TimeoutSeconds == nil {
		return DefaultAffinitySeconds
	}
	return *c.ClientIP.TimeoutSeconds
}

// objectName prints "namespace/name" as it is when it is plain, quoted
// otherwise, so that an invalid name cannot forge lines in a log.
func objectName(namespace, name string) string {
	nn := namespace + "/" + name
	if len(validation.IsDNS1123Label(namespace)) == 0 && len(validation.IsDNS1123Subdomain(name)) == 0 {
		return nn
	}
	return strconv.Quote(nn)
}

// epKey groups endpoints by family, port name and protocol.
type epKey struct {
	family   Family
	portName string
	protocol v1.Protocol
}

// collectEndpoints gathers a Service's endpoints from its EndpointSlices. A
// slice with an invalid field is skipped whole, with an error naming it.
func collectEndpoints(svc *v1.Service, slices []*discovery.EndpointSlice, node nodeInfo) (map[epKey][]Endpoint, []error) {
	out := map[epKey][]Endpoint{}
	var errs []error
	for _, s := range slices {
		f, ok := sliceFamily(s)
		if !ok {
			continue
		}
		eps, err := sliceEndpoints(s, f, node)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for k, list := range eps {
			out[k] = append(out[k], list...)
		}
	}
	for k, list := range out {
		out[k] = dedupe(list)
	}
	return out, errs
}

func sliceFamily(s *discovery.EndpointSlice) (Family, bool) {
	switch s.AddressType {
	case discovery.AddressTypeIPv4:
		return IPv4, true
	case discovery.AddressTypeIPv6:
		return IPv6, true
	}
	return 0, false // FQDN slices are not for proxies
}

// sliceEndpoints checks s with ValidateEndpointSlice and groups its
// endpoints by port; an error names the slice and every field at fault.
func sliceEndpoints(s *discovery.EndpointSlice, f Family, node nodeInfo) (map[epKey][]Endpoint, error) {
	if errs := ValidateEndpointSlice(s); len(errs) > 0 {
		return nil, fmt.Errorf("endpointslice %s: %w", objectName(s.Namespace, s.Name), errs.ToAggregate())
	}
	out := map[epKey][]Endpoint{}
	for _, p := range s.Ports {
		if p.Port == nil {
			continue
		}
		k := epKey{f, deref(p.Name), protocolOf(derefProto(p.Protocol))}
		if out[k] == nil {
			out[k] = make([]Endpoint, 0, len(s.Endpoints))
		}
		for _, e := range s.Endpoints {
			if len(e.Addresses) == 0 {
				continue
			}
			a := parseAddrs(e.Addresses[:1])[0] // validated: of the slice's family
			out[k] = append(out[k], endpointOf(e, netip.AddrPortFrom(a, uint16(*p.Port)), node))
		}
	}
	return out, nil
}

func endpointOf(e discovery.Endpoint, addr netip.AddrPort, node nodeInfo) Endpoint {
	// Unset conditions mean ready and serving, and not terminating, as the
	// API documents them (and kube-proxy reads them).
	ready := e.Conditions.Ready == nil || *e.Conditions.Ready
	serving := e.Conditions.Serving == nil || *e.Conditions.Serving
	ep := Endpoint{
		Addr:        addr,
		NodeName:    deref(e.NodeName),
		Zone:        deref(e.Zone),
		Ready:       ready,
		Serving:     serving,
		Terminating: e.Conditions.Terminating != nil && *e.Conditions.Terminating,
	}
	ep.Local = node.name != "" && ep.NodeName == node.name
	if h := e.Hints; h != nil && len(h.ForZones)+len(h.ForNodes) > 0 {
		ep.Hints = &Hints{}
		for _, z := range h.ForZones {
			ep.Hints.ForZones = append(ep.Hints.ForZones, z.Name)
		}
		for _, n := range h.ForNodes {
			ep.Hints.ForNodes = append(ep.Hints.ForNodes, n.Name)
		}
	}
	return ep
}

// dedupe keeps one endpoint per address, preferring a ready one, and sorts.
func dedupe(list []Endpoint) []Endpoint {
	slices.SortStableFunc(list, func(a, b Endpoint) int { return a.Addr.Compare(b.Addr) })
	out := list[:0]
	for _, e := range list {
		if n := len(out); n > 0 && out[n-1].Addr == e.Addr {
			if e.Ready && !out[n-1].Ready {
				out[n-1] = e
			}
			continue
		}
		out = append(out, e)
	}
	return out
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func derefProto(p *v1.Protocol) v1.Protocol {
	if p == nil {
		return ""
	}
	return *p
}
