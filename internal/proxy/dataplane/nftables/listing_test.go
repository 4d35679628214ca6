package nftables

import (
	"strings"
	"testing"
	"time"
)

func TestRulesetFromListing(t *testing.T) {
	rs, err := RulesetFromListing(`table ip svcproxy {
	comment "svcproxy: Kubernetes Services"
	set affinity-x {
		type ipv4_addr
		flags dynamic,timeout
		timeout 1d3h
		elements = { 10.244.1.3 timeout 1d3h expires 1d2h59m }
	}
	map service-ips {
		type ipv4_addr . inet_proto . inet_service : verdict
		elements = { 10.96.0.10 . tcp . 53 comment "kube-system/kube-dns:dns-tcp" : goto svc-A-kube-system/kube-dns/tcp/dns-tcp,
			     10.96.0.11 . tcp . 80 : goto svc-B }
	}
	chain nat-prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		jump services
	}
	chain services {
		ip daddr . meta l4proto . th dport vmap @service-ips comment "dispatch"
	}
}
`)
	if err != nil {
		t.Fatal(err)
	}
	if got := rs.Maps["service-ips"]["10.96.0.10 . tcp . 53"]; got != "goto svc-A-kube-system/kube-dns/tcp/dns-tcp" {
		t.Errorf("map element: %q", got)
	}
	if got := rs.Maps["service-ips"]["10.96.0.11 . tcp . 80"]; got != "goto svc-B" {
		t.Errorf("second element: %q", got)
	}
	if !rs.Sets["affinity-x"]["10.244.1.3"] || rs.Timeouts["affinity-x"] != int32((27*time.Hour).Seconds()) {
		t.Errorf("set: %v, timeout %d", rs.Sets["affinity-x"], rs.Timeouts["affinity-x"])
	}
	c := rs.Chains["nat-prerouting"]
	if c.Hook != "prerouting" || c.Priority != -100 || len(c.Rules) != 1 || c.Rules[0] != "jump services" {
		t.Errorf("base chain: %+v", c)
	}
	if r := rs.Chains["services"].Rules[0]; r != "ip daddr . meta l4proto . th dport vmap @service-ips" {
		t.Errorf("rule without its comment: %q", r)
	}
}

func TestRulesetFromListingRefusesWhatItDoesNotKnow(t *testing.T) {
	for _, bad := range []string{
		"table ip t {\n\tflowtable f {\n\t}\n}",
		"table ip t {\n\tset s {\n\t\tauto-merge-ish\n\t}\n}",
		"table ip t {\n\tset s {\n\t\ttimeout forever\n\t}\n}",
		"table ip t {\n\tchain c {\n\t\tjump x\n",
	} {
		if _, err := RulesetFromListing(bad); err == nil || !strings.Contains(err.Error(), "nft listing") {
			t.Errorf("RulesetFromListing(%q) = %v, want an error", bad, err)
		}
	}
}

func TestCanonicalListing(t *testing.T) {
	a := `table ip6 b {
	chain c {
		ip6 daddr ::1 accept
	}
}
table ip a {
	comment "x"
	set s {
		type ipv4_addr
		elements = { 10.0.0.2, 10.0.0.1,
			     10.0.0.3 }
	}

	chain z {
		type filter hook input priority filter; policy accept;
		ct state new jump y
		meta mark 1 drop
	}

	chain y {
		ip saddr != { 10.1.0.0/16, 10.2.0.0/16 } drop
	}
}
`
	b := `table ip a {
	comment "x"
	chain y {
		ip saddr != { 10.1.0.0/16, 10.2.0.0/16 } drop
	}

	set s {
		type ipv4_addr
		elements = { 10.0.0.3,
			     10.0.0.1, 10.0.0.2 }
	}

	chain z {
		type filter hook input priority filter; policy accept;
		ct state new jump y
		meta mark 1 drop
	}
}
table ip6 b {
	chain c {
		ip6 daddr ::1 accept
	}
}
`
	ca, cb := canonical(t, a), canonical(t, b)
	if ca != cb {
		t.Errorf("same contents, different canonical forms:\n%s\n---\n%s", ca, cb)
	}
	for _, want := range []string{"table ip a {", `comment "x"`, "10.0.0.1\n\t\t\t10.0.0.2\n\t\t\t10.0.0.3", "ct state new jump y\n\t\tmeta mark 1 drop", "ip6 daddr ::1 accept", "{ 10.1.0.0/16, 10.2.0.0/16 }"} {
		if !strings.Contains(ca, want) {
			t.Errorf("canonical form lost %q:\n%s", want, ca)
		}
	}
	// Rule order is kept: swapping two rules must show.
	swapped := strings.Replace(a, "\t\tct state new jump y\n\t\tmeta mark 1 drop", "\t\tmeta mark 1 drop\n\t\tct state new jump y", 1)
	if canonical(t, swapped) == ca {
		t.Error("rule order ignored")
	}
}

func canonical(t *testing.T, text string) string {
	t.Helper()
	c, err := CanonicalListing(text)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
