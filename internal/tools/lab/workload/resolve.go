package workload

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// ndots is the kubelet's resolv.conf option: a name with fewer dots is
// tried with the search suffixes first.
const ndots = 5

// resolver looks names up as a pod does whose resolv.conf reads
//
//	nameserver <Env.DNSServer>
//	search <ns>.svc.<domain> svc.<domain> <domain>
//	options ndots:5
//
// It hands net.Resolver only fully qualified names, so the host's own
// resolv.conf search list and ndots play no part.
type resolver struct {
	search []string
	server string
	dns    *net.Resolver
	dial   func(ctx context.Context, network, address string) (net.Conn, error)
}

func newResolver(env Env) *resolver {
	domain := strings.Trim(env.ClusterDomain, ".")
	return &resolver{
		search: []string{env.Namespace + ".svc." + domain, "svc." + domain, domain},
		server: env.DNSServer,
		dns: &net.Resolver{
			PreferGo: true,
			// Every query goes to the cluster DNS, from the pod.
			Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return env.Dial(ctx, network, env.DNSServer)
			},
		},
		dial: env.Dial,
	}
}

// dialContext dials address, resolving its host in the cluster, and tries
// each of the host's addresses in turn.
func (r *resolver) dialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	addrs, err := r.lookup(ctx, host)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, a := range addrs {
		conn, err := r.dial(ctx, network, net.JoinHostPort(a.String(), port))
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// lookup returns the addresses of host, an IP address or a name. When no
// name answers it reports the first failure: that of the name in the pod's
// own namespace, the one most likely meant.
func (r *resolver) lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a}, nil
	}
	if r.server == "" {
		return nil, fmt.Errorf("resolve %s: no DNS server", host)
	}
	var first error
	for _, name := range r.names(host) {
		addrs, err := r.dns.LookupNetIP(ctx, "ip", name)
		if err == nil {
			return addrs, nil
		}
		if first == nil {
			first = r.blameClusterDNS(err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("resolve %s: %w", host, first)
}

// blameClusterDNS names the cluster DNS in err: net.Resolver names the
// host's nameserver, though its Dial sent the query elsewhere.
func (r *resolver) blameClusterDNS(err error) error {
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		dnsErr.Server = r.server
	}
	return err
}

// names lists the fully qualified names to try for host, in order.
func (r *resolver) names(host string) []string {
	if strings.HasSuffix(host, ".") {
		return []string{host}
	}
	var names []string
	for _, suffix := range r.search {
		names = append(names, host+"."+suffix+".")
	}
	if strings.Count(host, ".") >= ndots {
		return append([]string{host + "."}, names...)
	}
	return append(names, host+".")
}
