package walkthrough

import (
	"strings"
	"testing"
)

// listing is a shortened `nft list table ip svcproxy` with two Services.
const listing = `table ip svcproxy {
	comment "svcproxy: Kubernetes Services"
	map endpoints-tcp-g0 {
		typeof ip daddr . tcp dport . numgen random mod 2 : ip daddr . tcp dport
		comment "tcp: address . port . index -> endpoint"
		elements = { 10.96.0.10 . 53 . 0 : 10.244.2.2 . 53,
			     10.96.207.156 . 80 . 0 : 10.244.1.4 . 8080,
			     10.96.184.100 . 3000 . 0 : 10.244.1.5 . 3000,
			     10.96.184.100 . 3000 . 1 : 10.244.1.6 . 3000 }
	}

	map service-ips {
		type ipv4_addr . inet_proto . inet_service : verdict
		comment "ClusterIP, external and load-balancer IP dispatch"
		elements = { 10.96.207.156 . tcp . 80 comment "default/frontend-service:frontend" : goto svc-FINNFWIE-default/frontend-service/tcp/frontend,
			     10.96.184.100 . tcp . 3000 comment "default/backend-service:backend" : goto svc-EZARTNF2-default/backend-service/tcp/backend }
	}

	set cluster-ips {
		type ipv4_addr
		comment "every ClusterIP, to reject undefined ports"
		elements = { 10.96.0.1 comment "default/kubernetes:https", 10.96.184.100 comment "default/backend-service:backend" }
	}

	chain mark-for-masquerade {
		meta mark set meta mark | 0x00004000
	}

	chain svc-FINNFWIE-default/frontend-service/tcp/frontend {
		goto lb-endpoints-tcp-1
	}

	chain svc-EZARTNF2-default/backend-service/tcp/backend {
		ip saddr != 10.244.0.0/16 jump mark-for-masquerade
		goto lb-endpoints-tcp-2
	}

	chain lb-endpoints-tcp-1 {
		dnat ip to ip daddr . tcp dport . numgen random mod 1 map @endpoints-tcp-g0
	}

	chain lb-endpoints-tcp-2 {
		dnat ip to ip daddr . tcp dport . numgen random mod 2 map @endpoints-tcp-g0
	}
}
`

func TestNftServiceKeepsOnlyTheServicesParts(t *testing.T) {
	got, err := nftService(listing, "default/backend-service", []string{"10.96.184.100 . "})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"chain svc-EZARTNF2-default/backend-service/tcp/backend {",
		"jump mark-for-masquerade",
		"chain mark-for-masquerade {",
		"chain lb-endpoints-tcp-2 {",
		"numgen random mod 2 map @endpoints-tcp-g0",
		"10.96.184.100 . 3000 . 0 : 10.244.1.5 . 3000",
		"10.96.184.100 . 3000 . 1 : 10.244.1.6 . 3000",
		`10.96.184.100 . tcp . 3000 comment "default/backend-service:backend"`,
		`10.96.184.100 comment "default/backend-service:backend"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
	for _, not := range []string{"frontend", "10.96.0.10", "lb-endpoints-tcp-1", "kubernetes:https"} {
		if strings.Contains(got, not) {
			t.Errorf("%q should not be in:\n%s", not, got)
		}
	}
	if strings.Count(got, "{") != strings.Count(got, "}") {
		t.Errorf("unbalanced braces:\n%s", got)
	}
}

// TestIPVSAdmBlocks keeps the heading and the virtual servers of one
// Service: its ClusterIPs (IPv4 and IPv6) and its node port on any address.
func TestIPVSAdmBlocks(t *testing.T) {
	const listing = `IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.96.0.1:443 rr
  -> 198.51.100.250:6443          Masq    1      0          0
TCP  10.96.184.100:3000 rr
  -> 10.244.1.5:3000              Masq    1      0          0
  -> 10.244.2.6:3000              Masq    1      0          0
TCP  10.96.184.101:3000 rr
  -> 10.244.1.9:3000              Masq    1      0          0
TCP  198.51.100.1:32073 rr
  -> 10.244.1.5:3000              Masq    1      0          0
TCP  198.51.100.1:32074 rr
UDP  10.96.0.10:53 rr
  -> 10.244.2.2:53                Masq    1      0          0
TCP  [fd00:10:96::b8]:3000 sh
  -> [fd00:10:244:1::5]:3000      Masq    1      0          0
`
	got := ipvsadmBlocks(listing, []string{"10.96.184.100:3000", "[fd00:10:96::b8]:3000", ":32073"})
	want := `IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.96.184.100:3000 rr
  -> 10.244.1.5:3000              Masq    1      0          0
  -> 10.244.2.6:3000              Masq    1      0          0
TCP  198.51.100.1:32073 rr
  -> 10.244.1.5:3000              Masq    1      0          0
TCP  [fd00:10:96::b8]:3000 sh
  -> [fd00:10:244:1::5]:3000      Masq    1      0          0`
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}
