package plan

import (
	"net/netip"
	"strings"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// The one validator of the objects svcproxy reads, whatever their source:
// the plan holds every Service and EndpointSlice to it before planning them
// (an object that fails is left out whole, never half-planned), and the
// manifests source holds files to it before handing them over. Its rules
// are the API server's, through apimachinery's helpers, so that what a
// cluster accepts the proxy accepts; where the API keeps a legacy leniency
// (IPv4-mapped addresses, spaces around source ranges) the proxy keeps it
// too. Names must be DNS labels and port names IANA service names: the
// renderers put them in rules and rely on that.

var (
	metaPath    = field.NewPath("metadata")
	specPath    = field.NewPath("spec")
	ingressPath = field.NewPath("status", "loadBalancer", "ingress")
	protocols   = []v1.Protocol{v1.ProtocolTCP, v1.ProtocolUDP, v1.ProtocolSCTP}
)

// ValidateService returns every field of svc that the proxy cannot use.
func ValidateService(svc *v1.Service) field.ErrorList {
	errs := validateMeta(&svc.ObjectMeta, validation.IsDNS1123Label)
	s, p := &svc.Spec, specPath
	errs = append(errs, oneOf(p.Child("type"), s.Type, "", v1.ServiceTypeClusterIP, v1.ServiceTypeNodePort,
		v1.ServiceTypeLoadBalancer, v1.ServiceTypeExternalName)...)
	errs = append(errs, oneOf(p.Child("sessionAffinity"), s.SessionAffinity, "", v1.ServiceAffinityNone, v1.ServiceAffinityClientIP)...)
	errs = append(errs, oneOf(p.Child("externalTrafficPolicy"), s.ExternalTrafficPolicy, "",
		v1.ServiceExternalTrafficPolicyCluster, v1.ServiceExternalTrafficPolicyLocal)...)
	if s.InternalTrafficPolicy != nil {
		errs = append(errs, oneOf(p.Child("internalTrafficPolicy"), *s.InternalTrafficPolicy,
			v1.ServiceInternalTrafficPolicyCluster, v1.ServiceInternalTrafficPolicyLocal)...)
	}
	for i, f := range s.IPFamilies {
		errs = append(errs, oneOf(p.Child("ipFamilies").Index(i), f, v1.IPv4Protocol, v1.IPv6Protocol)...)
	}
	if s.Type == v1.ServiceTypeExternalName && s.ExternalName == "" {
		errs = append(errs, field.Required(p.Child("externalName"), "for type ExternalName"))
	}
	errs = append(errs, validateClusterIPs(s)...)
	for i, ip := range s.ExternalIPs {
		errs = append(errs, validateIP(p.Child("externalIPs").Index(i), ip)...)
	}
	for i, ing := range svc.Status.LoadBalancer.Ingress {
		if ing.IP != "" {
			errs = append(errs, validateIP(ingressPath.Index(i).Child("ip"), ing.IP)...)
		}
	}
	for i, r := range s.LoadBalancerSourceRanges {
		errs = append(errs, validateCIDR(p.Child("loadBalancerSourceRanges").Index(i), r)...)
	}
	if c := s.SessionAffinityConfig; s.SessionAffinity == v1.ServiceAffinityClientIP && c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
		errs = append(errs, inRange(p.Child("sessionAffinityConfig", "clientIP", "timeoutSeconds"), int(*c.ClientIP.TimeoutSeconds), 1, 86400)...)
	}
	errs = append(errs, inRange(p.Child("healthCheckNodePort"), int(s.HealthCheckNodePort), 0, 65535)...)
	return append(errs, validateServicePorts(s)...)
}

// validateMeta checks the namespace (a DNS label) and the name.
func validateMeta(m *metav1.ObjectMeta, name func(string) []string) field.ErrorList {
	errs := invalid(metaPath.Child("namespace"), m.Namespace, validation.IsDNS1123Label(m.Namespace))
	if m.Name == "" {
		return append(errs, field.Required(metaPath.Child("name"), ""))
	}
	return append(errs, invalid(metaPath.Child("name"), m.Name, name(m.Name))...)
}

// validateClusterIPs accepts "", "None" or an address in clusterIP and each
// of clusterIPs, the first of which is clusterIP, at most one per family.
func validateClusterIPs(s *v1.ServiceSpec) field.ErrorList {
	var errs field.ErrorList
	if s.ClusterIP != "" && s.ClusterIP != v1.ClusterIPNone {
		errs = append(errs, validateIP(specPath.Child("clusterIP"), s.ClusterIP)...)
	}
	seen := map[bool]bool{} // by IPv4-ness
	for i, ip := range s.ClusterIPs {
		p := specPath.Child("clusterIPs").Index(i)
		switch {
		case i == 0 && s.ClusterIP != "" && ip != s.ClusterIP:
			errs = append(errs, field.Invalid(p, ip, "must equal spec.clusterIP "+s.ClusterIP))
		case ip == "" || ip == v1.ClusterIPNone:
		default:
			ipErrs := validateIP(p, ip)
			if len(ipErrs) > 0 {
				errs = append(errs, ipErrs...)
				continue
			}
			v4 := netip.MustParseAddr(ip).Unmap().Is4()
			if seen[v4] {
				errs = append(errs, field.Invalid(p, ip, "a second address of one family"))
			}
			seen[v4] = true
		}
	}
	return errs
}

func validateServicePorts(s *v1.ServiceSpec) field.ErrorList {
	var errs field.ErrorList
	if len(s.Ports) == 0 && s.Type != v1.ServiceTypeExternalName && s.ClusterIP != v1.ClusterIPNone {
		errs = append(errs, field.Required(specPath.Child("ports"), "at least one port"))
	}
	type portProto struct {
		port  int32
		proto v1.Protocol
	}
	ports, names := map[portProto]bool{}, map[string]bool{}
	for i, sp := range s.Ports {
		p := specPath.Child("ports").Index(i)
		errs = append(errs, portNum(p.Child("port"), sp.Port)...)
		if sp.NodePort != 0 {
			errs = append(errs, portNum(p.Child("nodePort"), sp.NodePort)...)
		}
		errs = append(errs, oneOf(p.Child("protocol"), sp.Protocol, append([]v1.Protocol{""}, protocols...)...)...)
		errs = append(errs, validateTargetPort(p.Child("targetPort"), sp.TargetPort)...)
		switch {
		case sp.Name == "" && len(s.Ports) > 1:
			errs = append(errs, field.Required(p.Child("name"), "when a Service has several ports"))
		case names[sp.Name]:
			errs = append(errs, field.Duplicate(p.Child("name"), sp.Name))
		case sp.Name != "":
			errs = append(errs, portName(p.Child("name"), sp.Name)...)
		}
		if k := (portProto{sp.Port, protocolOf(sp.Protocol)}); ports[k] {
			errs = append(errs, field.Duplicate(p.Child("port"), sp.Port))
		} else {
			ports[k] = true
		}
		names[sp.Name] = true
	}
	return errs
}

// validateTargetPort accepts a port number (0 for "the same as port") or
// a port name.
func validateTargetPort(p *field.Path, t intstr.IntOrString) field.ErrorList {
	if t.Type == intstr.String {
		return portName(p, t.StrVal)
	}
	if t.IntVal == 0 {
		return nil
	}
	return portNum(p, t.IntVal)
}

// ValidateEndpointSlice returns every field of s that the proxy cannot use.
func ValidateEndpointSlice(s *discovery.EndpointSlice) field.ErrorList {
	errs := validateMeta(&s.ObjectMeta, validation.IsDNS1123Subdomain)
	if s.Labels[discovery.LabelServiceName] == "" {
		errs = append(errs, field.Required(metaPath.Child("labels").Key(discovery.LabelServiceName), "the Service this slice belongs to"))
	}
	errs = append(errs, oneOf(field.NewPath("addressType"), s.AddressType,
		discovery.AddressTypeIPv4, discovery.AddressTypeIPv6, discovery.AddressTypeFQDN)...)
	for i, ep := range s.Endpoints {
		// An endpoint without an address is skipped, as kube-proxy does.
		p := field.NewPath("endpoints").Index(i).Child("addresses")
		for j, a := range ep.Addresses {
			errs = append(errs, validateAddress(p.Index(j), s.AddressType, a)...)
		}
	}
	for i, port := range s.Ports {
		p := field.NewPath("ports").Index(i)
		if port.Port != nil {
			errs = append(errs, portNum(p.Child("port"), *port.Port)...)
		}
		if port.Protocol != nil {
			errs = append(errs, oneOf(p.Child("protocol"), *port.Protocol, protocols...)...)
		}
		if port.Name != nil && *port.Name != "" {
			errs = append(errs, invalid(p.Child("name"), *port.Name, validation.IsDNS1123Label(*port.Name))...)
		}
	}
	return errs
}

// validateAddress checks an endpoint address against the slice's type. An
// IPv4-mapped IPv6 address is IPv4, as the API's legacy parsing has it.
func validateAddress(p *field.Path, t discovery.AddressType, a string) field.ErrorList {
	switch t {
	case discovery.AddressTypeIPv4, discovery.AddressTypeIPv6:
		if errs := validateIP(p, a); len(errs) > 0 {
			return errs
		}
		ip := netip.MustParseAddr(a)
		if ip.Unmap().Is4() != (t == discovery.AddressTypeIPv4) {
			return field.ErrorList{field.Invalid(p, a, "not an "+string(t)+" address (addressType "+string(t)+")")}
		}
	case discovery.AddressTypeFQDN:
		return invalid(p, a, validation.IsDNS1123Subdomain(a))
	}
	return nil
}

// validateIP accepts what the API's legacy IP fields accept, except octets
// with leading zeros (ambiguous: octal to some parsers), as the API's strict
// validation refuses them. No zone, no surrounding space.
func validateIP(p *field.Path, s string) field.ErrorList {
	if errs := validation.IsValidIPForLegacyField(p, s, false, nil); len(errs) > 0 {
		return errs
	}
	if _, err := netip.ParseAddr(s); err != nil {
		return field.ErrorList{field.Invalid(p, s, "must not have leading 0s")}
	}
	return nil
}

// validateCIDR accepts a CIDR with spaces around it, as the API does for
// loadBalancerSourceRanges.
func validateCIDR(p *field.Path, s string) field.ErrorList {
	t := strings.TrimSpace(s)
	if errs := validation.IsValidCIDRForLegacyField(p, t, false, nil); len(errs) > 0 {
		return errs
	}
	if _, err := netip.ParsePrefix(t); err != nil {
		return field.ErrorList{field.Invalid(p, s, "must not have leading 0s")}
	}
	return nil
}

func portNum(p *field.Path, n int32) field.ErrorList {
	return invalid(p, n, validation.IsValidPortNum(int(n)))
}

func portName(p *field.Path, name string) field.ErrorList {
	return invalid(p, name, validation.IsValidPortName(name))
}

func inRange(p *field.Path, n, lo, hi int) field.ErrorList {
	return invalid(p, n, validation.IsInRange(n, lo, hi))
}

// invalid turns apimachinery's messages about v into errors at p.
func invalid(p *field.Path, v any, msgs []string) field.ErrorList {
	var errs field.ErrorList
	for _, msg := range msgs {
		errs = append(errs, field.Invalid(p, v, msg))
	}
	return errs
}

func oneOf[T ~string](p *field.Path, v T, allowed ...T) field.ErrorList {
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	return field.ErrorList{field.NotSupported(p, v, allowed)}
}
