package plan

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
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
	spec, err := validateService(svc)
	if err != nil {
		return nil, []error{err}
	}
	eps, errs := collectEndpoints(svc, slices, node)
	var out []*ServicePort
	for _, ip := range spec.clusterIPs {
		f := FamilyOf(ip)
		for _, p := range svc.Spec.Ports {
			sp := spec.portFor(f, ip, p, cfg.NodeIPs)
			setEndpoints(sp, eps[epKey{f, p.Name, protocolOf(p.Protocol)}], node)
			resolve(sp, cfg)
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

// validateService checks every field the plan reads and parses it.
func validateService(svc *v1.Service) (*serviceSpec, error) {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("service %s: %s: %s", objectName(svc.Namespace, svc.Name), field, fmt.Sprintf(format, args...))
	}
	if err := validName("metadata.namespace", svc.Namespace, 63); err != nil {
		return nil, bad("metadata.namespace", "%v", err)
	}
	if err := validName("metadata.name", svc.Name, 63); err != nil {
		return nil, bad("metadata.name", "%v", err)
	}
	s := &serviceSpec{svc: svc}
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 {
		ips = []string{svc.Spec.ClusterIP}
	}
	seen := map[Family]bool{}
	for i, raw := range ips {
		ip, err := parseIP(raw)
		if err != nil {
			return nil, bad(fmt.Sprintf("spec.clusterIPs[%d]", i), "invalid IP %q", raw)
		}
		if seen[FamilyOf(ip)] {
			return nil, bad(fmt.Sprintf("spec.clusterIPs[%d]", i), "second %s address %s", FamilyOf(ip), ip)
		}
		seen[FamilyOf(ip)] = true
		s.clusterIPs = append(s.clusterIPs, ip)
	}
	if len(svc.Spec.Ports) == 0 {
		return nil, bad("spec.ports", "no ports")
	}
	if err := validatePorts(svc, bad); err != nil {
		return nil, err
	}
	var err error
	if s.externalIPs, err = parseAddrs(svc.Spec.ExternalIPs, "spec.externalIPs", bad); err != nil {
		return nil, err
	}
	if s.lbIPs, err = lbIngressIPs(svc, bad); err != nil {
		return nil, err
	}
	if s.sourceRanges, err = parseRanges(svc.Spec.LoadBalancerSourceRanges, bad); err != nil {
		return nil, err
	}
	if s.affinity, err = affinityOf(svc, bad); err != nil {
		return nil, err
	}
	if hc := svc.Spec.HealthCheckNodePort; hc < 0 || hc > 65535 {
		return nil, bad("spec.healthCheckNodePort", "%d out of range", hc)
	}
	return s, nil
}

type badField func(field, format string, args ...any) error

func validatePorts(svc *v1.Service, bad badField) error {
	type pp struct {
		port  int32
		proto v1.Protocol
	}
	seenPort := map[pp]bool{}
	seenName := map[string]bool{}
	for i, p := range svc.Spec.Ports {
		field := fmt.Sprintf("spec.ports[%d]", i)
		proto := protocolOf(p.Protocol)
		switch proto {
		case v1.ProtocolTCP, v1.ProtocolUDP, v1.ProtocolSCTP:
		default:
			return bad(field+".protocol", "unsupported protocol %q", p.Protocol)
		}
		if p.Port < 1 || p.Port > 65535 {
			return bad(field+".port", "%d out of range 1-65535", p.Port)
		}
		if p.NodePort < 0 || p.NodePort > 65535 {
			return bad(field+".nodePort", "%d out of range", p.NodePort)
		}
		if len(svc.Spec.Ports) > 1 && p.Name == "" {
			return bad(field+".name", "required when a Service has several ports")
		}
		if p.Name != "" {
			if err := validPortName(p.Name); err != nil {
				return bad(field+".name", "%v", err)
			}
		}
		if seenPort[pp{p.Port, proto}] {
			return bad(field+".port", "duplicate %d/%s", p.Port, proto)
		}
		if seenName[p.Name] {
			return bad(field+".name", "duplicate %q", p.Name)
		}
		seenPort[pp{p.Port, proto}], seenName[p.Name] = true, true
	}
	return nil
}

// parseIP parses an address as the plan stores it: IPv4-mapped IPv6
// addresses become IPv4, and an IPv6 zone ("fe80::1%eth0") is refused, since
// no Service address has one and its free-form text would reach the rules.
func parseIP(raw string) (netip.Addr, error) {
	a, err := netip.ParseAddr(raw)
	if err != nil {
		return netip.Addr{}, err
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("IPv6 zone %q not allowed", a.Zone())
	}
	return a.Unmap(), nil
}

func parseAddrs(raw []string, field string, bad badField) ([]netip.Addr, error) {
	var out []netip.Addr
	for i, r := range raw {
		a, err := parseIP(r)
		if err != nil {
			return nil, bad(fmt.Sprintf("%s[%d]", field, i), "invalid IP %q", r)
		}
		out = append(out, a)
	}
	return out, nil
}

func lbIngressIPs(svc *v1.Service, bad badField) ([]netip.Addr, error) {
	var out []netip.Addr
	for i, ing := range svc.Status.LoadBalancer.Ingress {
		if ing.IP == "" || (ing.IPMode != nil && *ing.IPMode != v1.LoadBalancerIPModeVIP) {
			continue // hostname-only, or Proxy mode: the load balancer delivers to the node
		}
		a, err := parseIP(ing.IP)
		if err != nil {
			return nil, bad(fmt.Sprintf("status.loadBalancer.ingress[%d].ip", i), "invalid IP %q", ing.IP)
		}
		out = append(out, a)
	}
	return out, nil
}

func parseRanges(raw []string, bad badField) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, r := range raw {
		p, err := netip.ParsePrefix(strings.TrimSpace(r))
		if err != nil {
			return nil, bad(fmt.Sprintf("spec.loadBalancerSourceRanges[%d]", i), "invalid CIDR %q", r)
		}
		p = p.Masked()
		if p.Addr().Is4In6() {
			// "::ffff:198.51.100.0/120" is 198.51.100.0/24: keep it in its
			// family's form, as addresses are.
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		out = append(out, p)
	}
	return out, nil
}

func affinityOf(svc *v1.Service, bad badField) (int32, error) {
	if svc.Spec.SessionAffinity != v1.ServiceAffinityClientIP {
		return 0, nil
	}
	c := svc.Spec.SessionAffinityConfig
	if c == nil || c.ClientIP == nil || c.ClientIP.TimeoutSeconds == nil {
		return DefaultAffinitySeconds, nil
	}
	t := *c.ClientIP.TimeoutSeconds
	if t < 1 || t > 86400 {
		return 0, bad("spec.sessionAffinityConfig.clientIP.timeoutSeconds", "%d out of range 1-86400", t)
	}
	return t, nil
}

// objectName prints "namespace/name" as it is when it is plain, quoted
// otherwise, so that an invalid name cannot forge lines in a log.
func objectName(namespace, name string) string {
	nn := namespace + "/" + name
	if validName("", namespace, 63) == nil && validName("", name, 253) == nil {
		return nn
	}
	return strconv.Quote(nn)
}

// validName accepts a DNS-1123 label: what namespaces and Service names are.
// The renderers rely on it, so a name never carries rule syntax.
func validName(field, s string, max int) error {
	if s == "" || len(s) > max {
		return fmt.Errorf("must be 1-%d characters, got %d", max, len(s))
	}
	for i, c := range s {
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' && i > 0 && i < len(s)-1
		if !ok {
			return fmt.Errorf("invalid character %q at %d in %q (lower-case letters, digits and inner '-' only)", c, i, s)
		}
	}
	return nil
}

// validPortName accepts an IANA service name, as Service port names are.
func validPortName(s string) error {
	if len(s) > 15 {
		return fmt.Errorf("%q longer than 15 characters", s)
	}
	return validName("name", s, 15)
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

func sliceEndpoints(s *discovery.EndpointSlice, f Family, node nodeInfo) (map[epKey][]Endpoint, error) {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("endpointslice %s: %s: %s", objectName(s.Namespace, s.Name), field, fmt.Sprintf(format, args...))
	}
	out := map[epKey][]Endpoint{}
	for i, p := range s.Ports {
		if p.Port == nil {
			continue
		}
		if *p.Port < 1 || *p.Port > 65535 {
			return nil, bad(fmt.Sprintf("ports[%d].port", i), "%d out of range 1-65535", *p.Port)
		}
		k := epKey{f, deref(p.Name), protocolOf(derefProto(p.Protocol))}
		if out[k] == nil {
			out[k] = make([]Endpoint, 0, len(s.Endpoints))
		}
		for j, e := range s.Endpoints {
			if len(e.Addresses) == 0 {
				continue
			}
			a, err := parseIP(e.Addresses[0])
			if err != nil || FamilyOf(a) != f {
				return nil, bad(fmt.Sprintf("endpoints[%d].addresses[0]", j), "invalid %s address %q", f, e.Addresses[0])
			}
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
