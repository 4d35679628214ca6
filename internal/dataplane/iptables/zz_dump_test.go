package iptables

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"

	"github.com/svcproxy/svcproxy/internal/objects"
	"github.com/svcproxy/svcproxy/internal/plan"
)

func zzAddr(base netip.Addr, off uint32) netip.Addr {
	b := base.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += off
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func zzSlice(i, eps, gen int) *discovery.EndpointSlice {
	var endpoints []discovery.Endpoint
	for j := 0; j < eps; j++ {
		node := "other"
		if j == 0 {
			node = "bench-node"
		}
		k := j
		if j == eps-1 {
			k += gen * eps
		}
		ip := zzAddr(netip.MustParseAddr("10.128.0.0"), uint32(i*eps*64+k+1))
		endpoints = append(endpoints, objects.Endpoint(ip.String(), objects.OnNode(node), objects.Ready(true)))
	}
	return objects.Slice("bench", fmt.Sprintf("svc-%d-abc", i), fmt.Sprintf("svc-%d", i), discovery.AddressTypeIPv4,
		[]discovery.EndpointPort{objects.EndpointPort("http", "", 8080)}, endpoints...)
}

// TestZZDump writes restore inputs for the bench workload (temporary).
func TestZZDump(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("ZZN"))
	if n == 0 {
		t.Skip()
	}
	tr := plan.NewTracker(plan.Config{NodeName: "bench-node"})
	for i := 0; i < n; i++ {
		tr.SetSlice(zzSlice(i, 10, 0))
		opts := []objects.ServiceOption{objects.ClusterIP(zzAddr(netip.MustParseAddr("10.96.0.0"), uint32(i+1)).String()), objects.Port("http", v1.ProtocolTCP, 80, 0)}
		if i%10 == 0 {
			opts = append(opts, objects.NodePort(int32(30000+i/10%2768)))
		}
		tr.SetService(objects.Service("bench", fmt.Sprintf("svc-%d", i), opts...))
	}
	p, ch := tr.Sync()
	step := 0
	run := func(_ context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
		if len(stdin) > 0 {
			os.WriteFile(fmt.Sprintf("/tmp/zz-%d-%d.txt", n, step), stdin, 0o644)
			step++
		}
		return nil, nil
	}
	d := New(Options{Run: run, Families: []plan.Family{plan.IPv4}, Backend: "legacy"})
	start := time.Now()
	if err := d.Sync(context.Background(), p, ch); err != nil {
		t.Fatal(err)
	}
	t.Logf("cold render %v", time.Since(start))
	for i := 0; i < 3; i++ {
		tr.SetSlice(zzSlice(i*7919%n, 10, i+1))
		p, ch = tr.Sync()
		start := time.Now()
		if err := d.Sync(context.Background(), p, ch); err != nil {
			t.Fatal(err)
		}
		t.Logf("change render %v", time.Since(start))
	}
}
