package lbpool

import (
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestPick(t *testing.T) {
	used := map[netip.Addr]bool{netip.MustParseAddr("203.0.113.1"): true}
	for _, c := range []struct {
		requested, want, err string
	}{
		{"", "203.0.113.2", ""},
		{"203.0.113.77", "203.0.113.77", ""},
		{"203.0.113.1", "", "is taken"},
		{"10.0.0.1", "", "not in the pool"},
		{"nonsense", "", "not in the pool"},
	} {
		svc := &corev1.Service{Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerIP: c.requested}}
		got, err := pick(svc, used)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("pick(%q) = %v, %v; want error %q", c.requested, got, err, c.err)
			}
			continue
		}
		if err != nil || got.String() != c.want {
			t.Errorf("pick(%q) = %v, %v; want %s", c.requested, got, err, c.want)
		}
	}
}

func TestPickExhausted(t *testing.T) {
	used := map[netip.Addr]bool{}
	for a := netip.MustParseAddr("203.0.113.1"); a.String() != "203.0.113.255"; a = a.Next() {
		used[a] = true
	}
	if _, err := pick(&corev1.Service{}, used); err == nil || !strings.Contains(err.Error(), "exhausted") {
		t.Errorf("pick from a full pool: %v", err)
	}
}

func TestWantsAddress(t *testing.T) {
	class := "example.com/other"
	for _, c := range []struct {
		spec corev1.ServiceSpec
		want bool
	}{
		{corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer}, true},
		{corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: &class}, false},
		{corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort}, false},
	} {
		if got := wantsAddress(&corev1.Service{Spec: c.spec}); got != c.want {
			t.Errorf("wantsAddress(%+v) = %v", c.spec, got)
		}
	}
}
