package plan

import (
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// showRoute prints a route as "[bypass; ...] default", each outcome as
// "FORWARD pool masq".
func showRoute(r Route) string {
	show := func(o Outcome) string {
		if o.Action != Forward {
			return string(o.Action)
		}
		s := fmt.Sprintf("FORWARD %s", o.Pool)
		switch o.Masquerade.Mode {
		case MasqAlways:
			s += " masq"
		case MasqUnlessFrom:
			s += fmt.Sprintf(" masq-unless%v", o.Masquerade.Except)
		}
		return s
	}
	var parts []string
	for _, b := range r.Bypasses {
		from := "node"
		if !b.From.Node {
			from = fmt.Sprint(b.From.Prefixes)
		}
		parts = append(parts, from+": "+show(b.Outcome))
	}
	return "[" + strings.Join(parts, "; ") + "] " + show(r.Default)
}

// TestRoutes: what each kind of traffic gets, for every combination of
// traffic policies, endpoints here and elsewhere, pod network and
// masqueradeAll (DESIGN §3).
func TestRoutes(t *testing.T) {
	pods := prefixes("10.244.0.0/16")
	remote, local := aps("10.244.2.2:80"), aps("10.244.1.2:80")
	for _, tt := range []struct {
		name          string
		itp, etp      bool
		cluster, loc  []netip.AddrPort
		pods          []netip.Prefix
		masqAll       bool
		internal, ext string
	}{
		{name: "no endpoints: rejected everywhere", etp: true, pods: pods,
			internal: "[] REJECT", ext: "[] REJECT"},
		{name: "Cluster policies", cluster: remote, pods: pods,
			internal: "[] FORWARD cluster masq-unless[10.244.0.0/16]", ext: "[] FORWARD cluster masq"},
		{name: "no pod network: ClusterIP never masqueraded", cluster: remote,
			internal: "[] FORWARD cluster", ext: "[] FORWARD cluster masq"},
		{name: "masqueradeAll", cluster: remote, pods: pods, masqAll: true,
			internal: "[] FORWARD cluster masq", ext: "[] FORWARD cluster masq"},
		{name: "internal Local with a local endpoint", itp: true, cluster: append(local, remote...), loc: local, pods: pods,
			internal: "[] FORWARD local masq-unless[10.244.0.0/16]", ext: "[] FORWARD cluster masq"},
		{name: "internal Local without one: dropped", itp: true, cluster: remote, pods: pods,
			internal: "[] DROP", ext: "[] FORWARD cluster masq"},
		{name: "external Local: pods, then the node, bypass", etp: true, cluster: append(local, remote...), loc: local, pods: pods,
			internal: "[] FORWARD cluster masq-unless[10.244.0.0/16]",
			ext:      "[[10.244.0.0/16]: FORWARD cluster; node: FORWARD cluster masq] FORWARD local"},
		{name: "external Local without a local endpoint: the rest dropped", etp: true, cluster: remote, pods: pods,
			internal: "[] FORWARD cluster masq-unless[10.244.0.0/16]",
			ext:      "[[10.244.0.0/16]: FORWARD cluster; node: FORWARD cluster masq] DROP"},
		{name: "external Local, no pod network: only the node bypasses", etp: true, cluster: remote,
			internal: "[] FORWARD cluster", ext: "[node: FORWARD cluster masq] DROP"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sp := &ServicePort{Key: Key{Family: IPv4}, NodePort: 30080, ClusterEndpoints: tt.cluster, LocalEndpoints: tt.loc,
				Inputs: Inputs{InternalLocal: tt.itp, ExternalLocal: tt.etp}}
			resolve(sp, &Config{ClusterCIDRs: tt.pods, MasqueradeAll: tt.masqAll}, Scheduling{})
			if got := showRoute(sp.Internal); got != tt.internal {
				t.Errorf("internal: %s, want %s", got, tt.internal)
			}
			if got := showRoute(sp.External); got != tt.ext {
				t.Errorf("external: %s, want %s", got, tt.ext)
			}
			for _, r := range []Route{sp.Internal, sp.External} {
				if r.Default.Why == "" {
					t.Errorf("no reason for %s", showRoute(r))
				}
			}
		})
	}
}

// TestNoExternalRoute: a port without external addresses has no external
// route, whatever its policy says.
func TestNoExternalRoute(t *testing.T) {
	sp := &ServicePort{Key: Key{Family: IPv4}, ClusterEndpoints: aps("10.244.2.2:80"), Inputs: Inputs{ExternalLocal: true}}
	resolve(sp, &Config{}, Scheduling{})
	if !reflect.DeepEqual(sp.External, Route{}) {
		t.Errorf("external route %s, want none", showRoute(sp.External))
	}
}

// TestHairpinSet: the endpoints that may be their own client through this
// node are the forwarded-to ones that are local or of unknown node, and
// all of them under externalTrafficPolicy Local.
func TestHairpinSet(t *testing.T) {
	eps := []Endpoint{
		{Addr: netip.MustParseAddrPort("10.244.1.2:80"), NodeName: "node1", Local: true, Ready: true, Serving: true},
		{Addr: netip.MustParseAddrPort("10.244.2.2:80"), NodeName: "node2", Ready: true, Serving: true},
		{Addr: netip.MustParseAddrPort("10.244.9.9:80"), Ready: true, Serving: true}, // no node
	}
	all := aps("10.244.1.2:80", "10.244.2.2:80", "10.244.9.9:80")
	for _, tt := range []struct {
		name     string
		itp, etp bool
		local    []netip.AddrPort
		want     string
	}{
		{name: "Cluster policies: local and unknown", want: "[10.244.1.2 10.244.9.9]"},
		{name: "internal Local: the local pool only", itp: true, local: aps("10.244.1.2:80"), want: "[10.244.1.2]"},
		{name: "external Local: every endpoint", etp: true, local: aps("10.244.1.2:80"), want: "[10.244.1.2 10.244.2.2 10.244.9.9]"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sp := &ServicePort{Key: Key{Family: IPv4}, ClusterEndpoints: all, LocalEndpoints: tt.local,
				Inputs: Inputs{InternalLocal: tt.itp, ExternalLocal: tt.etp, Endpoints: eps}}
			if tt.etp {
				sp.NodePort = 30080
			}
			resolve(sp, &Config{ClusterCIDRs: prefixes("10.244.0.0/16")}, Scheduling{})
			if got := fmt.Sprint(sp.Hairpin); got != tt.want {
				t.Errorf("hairpin %s, want %s", got, tt.want)
			}
		})
	}
}

// TestLiveAndHealth: serving endpoints stay live whether ready or not;
// the health check counts distinct local ready addresses only.
func TestLiveAndHealth(t *testing.T) {
	ep := func(addr string, local, ready, serving bool) Endpoint {
		return Endpoint{Addr: netip.MustParseAddrPort(addr), Local: local, Ready: ready, Serving: serving, Terminating: !ready}
	}
	sp := &ServicePort{Key: Key{Family: IPv4}, NodePort: 30080, HealthCheck: HealthCheck{NodePort: 32000},
		ClusterEndpoints: aps("10.244.1.2:80", "10.244.2.2:80"), LocalEndpoints: aps("10.244.1.2:80"),
		Inputs: Inputs{ExternalLocal: true, Endpoints: []Endpoint{
			ep("10.244.1.2:80", true, true, true), ep("10.244.1.3:80", true, false, true),
			ep("10.244.1.4:80", true, false, false), ep("10.244.2.2:80", false, true, true),
		}}}
	resolve(sp, &Config{}, Scheduling{})
	if got, want := fmt.Sprint(sp.Live), "[10.244.1.2:80 10.244.1.3:80 10.244.2.2:80]"; got != want {
		t.Errorf("live %s, want %s", got, want)
	}
	if got, want := fmt.Sprint(sp.HealthCheck.LocalEndpoints), "[10.244.1.2]"; got != want {
		t.Errorf("health check counts %s, want %s", got, want)
	}
}

// TestCheckCapabilities: a configuration that asks for more than a
// dataplane can write is refused, naming the setting.
func TestCheckCapabilities(t *testing.T) {
	two := Config{ClusterCIDRs: prefixes("10.244.0.0/16", "10.245.0.0/16", "fd00:10:244::/56")}
	one := Capabilities{Dataplane: "iptables", PodPrefixes: 1}
	if err := two.Check(one); err == nil || !strings.Contains(err.Error(), "clusterCIDR") || !strings.Contains(err.Error(), "iptables") {
		t.Errorf("two IPv4 prefixes for one: %v", err)
	}
	if err := two.Check(Capabilities{Dataplane: "nftables"}); err != nil {
		t.Errorf("no limit: %v", err)
	}
	if err := (&Config{ClusterCIDRs: prefixes("10.244.0.0/16", "fd00:10:244::/56")}).Check(one); err != nil {
		t.Errorf("one per family: %v", err)
	}
}
