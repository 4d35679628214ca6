package manifests

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/svcproxy/svcproxy/internal/proxy/source"
)

// fieldErrs collects "prefix: field: message" errors for one object.
type fieldErrs struct {
	prefix string
	list   []error
}

func (e *fieldErrs) add(field, format string, args ...any) {
	e.list = append(e.list, fmt.Errorf("%s: %s: %s", e.prefix, field, fmt.Sprintf(format, args...)))
}

func (e *fieldErrs) err() error { return errors.Join(e.list...) }

// ignored says whether an object is another proxy's or headless, which
// kube-proxy (and the kube source) never see.
func ignored(labels map[string]string) bool {
	_, other := labels[source.LabelServiceProxyName]
	_, headless := labels[source.LabelHeadless]
	return other || headless
}

func validatePort(e *fieldErrs, field string, port int32, zeroOK bool) {
	if (port == 0 && zeroOK) || (port >= 1 && port <= 65535) {
		return
	}
	e.add(field, "must be between 1 and 65535, got %d", port)
}

func validateProtocol(e *fieldErrs, field string, p v1.Protocol) {
	switch p {
	case "", v1.ProtocolTCP, v1.ProtocolUDP, v1.ProtocolSCTP:
	default:
		e.add(field, "must be TCP, UDP or SCTP, got %q", p)
	}
}

func validateOneOf[T ~string](e *fieldErrs, field string, v T, allowed ...T) {
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	e.add(field, "must be one of %q, got %q", allowed, v)
}

// validateService checks what the dataplane relies on.
func validateService(svc *v1.Service, e *fieldErrs) {
	s := &svc.Spec
	validateOneOf(e, "spec.type", s.Type, "", v1.ServiceTypeClusterIP, v1.ServiceTypeNodePort,
		v1.ServiceTypeLoadBalancer, v1.ServiceTypeExternalName)
	validateOneOf(e, "spec.sessionAffinity", s.SessionAffinity, "", v1.ServiceAffinityNone, v1.ServiceAffinityClientIP)
	validateOneOf(e, "spec.externalTrafficPolicy", s.ExternalTrafficPolicy, "",
		v1.ServiceExternalTrafficPolicyCluster, v1.ServiceExternalTrafficPolicyLocal)
	if s.InternalTrafficPolicy != nil {
		validateOneOf(e, "spec.internalTrafficPolicy", *s.InternalTrafficPolicy,
			v1.ServiceInternalTrafficPolicyCluster, v1.ServiceInternalTrafficPolicyLocal)
	}
	if s.Type == v1.ServiceTypeExternalName && s.ExternalName == "" {
		e.add("spec.externalName", "required for type ExternalName")
	}
	validateClusterIPs(s, e)
	for i, ip := range s.ExternalIPs {
		if _, err := netip.ParseAddr(ip); err != nil {
			e.add(fmt.Sprintf("spec.externalIPs[%d]", i), "not an IP address: %q", ip)
		}
	}
	for i, f := range s.IPFamilies {
		validateOneOf(e, fmt.Sprintf("spec.ipFamilies[%d]", i), f, v1.IPv4Protocol, v1.IPv6Protocol)
	}
	validateServicePorts(s, e)
}

func validateClusterIPs(s *v1.ServiceSpec, e *fieldErrs) {
	check := func(field, ip string) {
		if ip == "" || ip == v1.ClusterIPNone {
			return
		}
		if _, err := netip.ParseAddr(ip); err != nil {
			e.add(field, "must be an IP address, %q or empty, got %q", v1.ClusterIPNone, ip)
		}
	}
	check("spec.clusterIP", s.ClusterIP)
	for i, ip := range s.ClusterIPs {
		check(fmt.Sprintf("spec.clusterIPs[%d]", i), ip)
	}
	if len(s.ClusterIPs) > 0 && s.ClusterIP != "" && s.ClusterIP != s.ClusterIPs[0] {
		e.add("spec.clusterIPs[0]", "must equal spec.clusterIP %q, got %q", s.ClusterIP, s.ClusterIPs[0])
	}
}

func validateServicePorts(s *v1.ServiceSpec, e *fieldErrs) {
	if len(s.Ports) == 0 && s.Type != v1.ServiceTypeExternalName && s.ClusterIP != v1.ClusterIPNone {
		e.add("spec.ports", "at least one port is required")
	}
	names := map[string]bool{}
	for i, p := range s.Ports {
		f := fmt.Sprintf("spec.ports[%d]", i)
		validatePort(e, f+".port", p.Port, false)
		validatePort(e, f+".nodePort", p.NodePort, true)
		validateProtocol(e, f+".protocol", p.Protocol)
		if p.TargetPort.Type == intstr.Int {
			validatePort(e, f+".targetPort", p.TargetPort.IntVal, true)
		} else if p.TargetPort.StrVal == "" {
			e.add(f+".targetPort", "must be a port number or a port name")
		}
		if len(s.Ports) > 1 && p.Name == "" {
			e.add(f+".name", "required when there is more than one port")
		} else if names[p.Name] {
			e.add(f+".name", "duplicate port name %q", p.Name)
		}
		names[p.Name] = true
	}
}

// validateSlice checks what the dataplane relies on.
func validateSlice(s *discovery.EndpointSlice, e *fieldErrs) {
	if s.Labels[discovery.LabelServiceName] == "" {
		e.add(fmt.Sprintf("metadata.labels[%q]", discovery.LabelServiceName), "required: the Service this slice belongs to")
	}
	validateOneOf(e, "addressType", s.AddressType,
		discovery.AddressTypeIPv4, discovery.AddressTypeIPv6, discovery.AddressTypeFQDN)
	for i, ep := range s.Endpoints {
		f := fmt.Sprintf("endpoints[%d].addresses", i)
		if len(ep.Addresses) == 0 {
			e.add(f, "at least one address is required")
		}
		for j, a := range ep.Addresses {
			validateAddress(e, fmt.Sprintf("%s[%d]", f, j), s.AddressType, a)
		}
	}
	for i, p := range s.Ports {
		f := fmt.Sprintf("ports[%d]", i)
		if p.Port != nil {
			validatePort(e, f+".port", *p.Port, false)
		}
		if p.Protocol != nil {
			validateProtocol(e, f+".protocol", *p.Protocol)
		}
	}
}

func validateAddress(e *fieldErrs, field string, t discovery.AddressType, a string) {
	switch t {
	case discovery.AddressTypeIPv4, discovery.AddressTypeIPv6:
		ip, err := netip.ParseAddr(a)
		switch {
		case err != nil || ip.Zone() != "":
			e.add(field, "not an IP address: %q", a)
		case t == discovery.AddressTypeIPv4 && !ip.Is4():
			e.add(field, "not an IPv4 address (addressType IPv4): %q", a)
		case t == discovery.AddressTypeIPv6 && (!ip.Is6() || ip.Is4In6()):
			e.add(field, "not an IPv6 address (addressType IPv6): %q", a)
		}
	case discovery.AddressTypeFQDN:
		if a == "" || strings.ContainsAny(a, " \t/") {
			e.add(field, "not a domain name: %q", a)
		}
	}
}
