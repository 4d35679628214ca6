// Package demo is svcproxy's embedded default: it builds a throwaway
// two-node cluster of network namespaces, programs node1 with the nftables
// dataplane from an embedded set of Services and EndpointSlices, sends real
// traffic and shows what happened — spread over endpoints, the source IPs
// the backends saw, and the rules. It removes everything it made.
//
// It stands in for `svcproxy lab` (a real control plane) until that exists.
package demo

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"sigs.k8s.io/yaml"

	"github.com/svcproxy/svcproxy/internal/proxy/dataplane/nftables"
	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/testkit/testnet"
)

//go:embed objects.yaml
var objectsYAML []byte

const podPort = 8080

// Run runs the demo, writing what it shows to out.
func Run(ctx context.Context, out io.Writer) error {
	in, err := Input(objectsYAML)
	if err != nil {
		return err
	}
	p, errs := plan.Build(in)
	for _, e := range errs {
		fmt.Fprintf(out, "warning: %v\n", e)
	}
	fmt.Fprintln(out, "== building a cluster of network namespaces: node1, node2, pods, an external client")
	c, err := testnet.Build(ctx, testnet.Options{})
	if err != nil {
		return err
	}
	defer c.Close()
	for _, pod := range c.PodList {
		srv, err := pod.NS.Listen(pod.Name, netip.AddrPortFrom(pod.IPv4, podPort))
		if err != nil {
			return err
		}
		defer srv.Close()
	}
	dp := nftables.New(nftables.Options{Families: []plan.Family{plan.IPv4}})
	start := time.Now()
	if err := c.Node1.Do(func() error { return dp.Sync(ctx, p, plan.Changes{Full: true}) }); err != nil {
		return err
	}
	defer c.Node1.Do(func() error { return dp.Cleanup(context.Background()) })
	fmt.Fprintf(out, "   svcproxy programmed node1 in %v\n\n", time.Since(start).Round(time.Millisecond))
	showServices(out, p)

	lan := testnet.Node1Addrs.LANv4
	steps := []struct {
		title string
		from  *testnet.NS
		dst   netip.AddrPort
	}{
		{"from pod1a to backend-service's ClusterIP: random spread over every endpoint, pod IP kept", c.Pods["pod1a"].NS, netip.MustParseAddrPort("10.96.0.10:3000")},
		{"from the external client to NodePort 30080 on node1 (externalTrafficPolicy Cluster): masqueraded to node1\n   (to its LAN address, or its address on the pod's link for a pod on node1)", c.Ext, netip.AddrPortFrom(lan, 30080)},
		{"from the external client to NodePort 30081 on node1 (externalTrafficPolicy Local): only node1's pod, client IP kept", c.Ext, netip.AddrPortFrom(lan, 30081)},
	}
	for _, s := range steps {
		if err := requests(ctx, out, s.title, s.from, s.dst, 30); err != nil {
			return err
		}
	}
	if err := showRules(ctx, out, c.Node1); err != nil {
		return err
	}
	fmt.Fprintln(out, "\n== removing the rules and the namespaces")
	return nil
}

// Input decodes a multi-document YAML of Services and EndpointSlices.
func Input(data []byte) (plan.Input, error) {
	in := plan.Input{Config: plan.Config{
		NodeName:     testnet.Node1Addrs.Name,
		ClusterCIDRs: []netip.Prefix{testnet.ClusterCIDRv4, testnet.ClusterCIDRv6},
		NodeIPs:      testnet.Node1Addrs.IPs(),
	}}
	for i, doc := range bytes.Split(data, []byte("\n---\n")) {
		var meta struct{ Kind string }
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			return in, fmt.Errorf("document %d: %w", i+1, err)
		}
		switch meta.Kind {
		case "Service":
			svc := &v1.Service{}
			if err := yaml.UnmarshalStrict(doc, svc); err != nil {
				return in, fmt.Errorf("document %d (Service): %w", i+1, err)
			}
			in.Services = append(in.Services, svc)
		case "EndpointSlice":
			s := &discovery.EndpointSlice{}
			if err := yaml.UnmarshalStrict(doc, s); err != nil {
				return in, fmt.Errorf("document %d (EndpointSlice): %w", i+1, err)
			}
			in.Slices = append(in.Slices, s)
		default:
			return in, fmt.Errorf("document %d: kind %q is neither Service nor EndpointSlice", i+1, meta.Kind)
		}
	}
	return in, nil
}

func showServices(out io.Writer, p *plan.Plan) {
	fmt.Fprintln(out, "== Services and the endpoints node1 uses for them")
	for _, sp := range p.PortsOf(plan.IPv4) {
		addr := fmt.Sprintf("%s:%d", sp.ClusterIP, sp.Port)
		if sp.NodePort != 0 {
			addr += fmt.Sprintf(", NodePort %d", sp.NodePort)
		}
		policy := "Cluster"
		if sp.ExternalLocal {
			policy = "Local"
		}
		fmt.Fprintf(out, "   %-34s %-30s externalTrafficPolicy %-7s cluster %v local %v\n",
			sp.ServicePortName, addr, policy, sp.ClusterEndpoints, sp.LocalEndpoints)
	}
	fmt.Fprintln(out)
}

// requests sends n TCP requests and prints which pod answered and the
// source IP it saw.
func requests(ctx context.Context, out io.Writer, title string, from *testnet.NS, dst netip.AddrPort, n int) error {
	fmt.Fprintf(out, "== %s\n   %d requests to %s\n", title, n, dst)
	count := map[string]int{}
	failed := 0
	for i := 0; i < n; i++ {
		r, err := from.Ask(ctx, "tcp", dst, 2*time.Second)
		if err != nil {
			failed++
			continue
		}
		count[fmt.Sprintf("%-6s saw source %s", r.Pod, r.Src.Addr())]++
	}
	keys := make([]string, 0, len(count))
	for k := range count {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(out, "   %-40s %3d %s\n", k, count[k], strings.Repeat("#", count[k]))
	}
	if failed > 0 {
		fmt.Fprintf(out, "   %d requests failed\n", failed)
	}
	fmt.Fprintln(out)
	return nil
}

func showRules(ctx context.Context, out io.Writer, node *testnet.NS) error {
	fmt.Fprintln(out, "== the rules svcproxy programmed on node1 for backend-service (from nft list table ip svcproxy)")
	text, err := node.Exec(ctx, "nft", "list", "table", "ip", "svcproxy")
	if err != nil {
		return err
	}
	wanted := func(header string) bool {
		for _, w := range []string{"map service-ips ", "chain services ", "backend-service", "chain lb-endpoints-tcp-3 ", "map endpoints-tcp "} {
			if strings.Contains(header, w) {
				return true
			}
		}
		return false
	}
	show := false
	for _, line := range strings.Split(text, "\n") {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "chain ") || strings.HasPrefix(t, "map ") || strings.HasPrefix(t, "set ") {
			show = wanted(t + " ")
		}
		if show {
			fmt.Fprintln(out, line)
		}
	}
	return nil
}
