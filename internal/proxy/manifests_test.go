package proxy

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/svcproxy/svcproxy/internal/testkit/testnet"
)

// manifest is the web Service on NodePort 30090 with endpoints on the
// given pods, as a standalone user would write it.
func (r *rig) manifest(port int, pods ...string) string {
	var eps []string
	for _, p := range pods {
		eps = append(eps, fmt.Sprintf("- addresses: [%q]\n  nodeName: %s", r.pod(p).IPv4, r.pod(p).Node))
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: NodePort
  clusterIP: 10.96.0.30
  ports: [{name: http, port: 80, targetPort: %d, nodePort: %d}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: %d}]
endpoints:
%s
`, podPort, port, podPort, strings.Join(eps, "\n"))
}

// TestManifestsSource: `--manifests DIR` makes node1 a load balancer with
// Kubernetes semantics, without an apiserver; a bad edit keeps the last
// good state; --cleanup then removes every rule.
func TestManifestsSource(t *testing.T) { inEveryMode(t, testManifestsSource) }

func testManifestsSource(t *testing.T, mode string) {
	r := newNetRig(t, mode)
	dir := t.TempDir()
	file := filepath.Join(dir, "web.yaml")
	write := func(content string) {
		// Write then rename, so the poller never reads half a file.
		tmp := filepath.Join(dir, ".web.yaml.tmp")
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, file); err != nil {
			t.Fatal(err)
		}
	}
	nodePort := netip.AddrPortFrom(testnet.Node1Addrs.LANv4, 30090)
	write(r.manifest(30090, "pod1a", "pod2a"))
	r.start("--manifests=" + dir)
	r.eventually(r.net.Ext, nodePort, "pod1a", "pod2a")
	r.waitCode(healthzAddr, "/healthz", 200)

	write(r.manifest(70000, "pod2b")) // invalid nodePort: ignored as a whole
	r.waitLog("spec.ports[0].nodePort: Invalid value: 70000: must be between 1 and 65535")
	r.eventually(r.net.Ext, nodePort, "pod1a", "pod2a")

	write(r.manifest(30090, "pod2b"))
	r.eventually(r.net.Ext, nodePort, "pod2b")

	r.stop()
	r.eventually(r.net.Ext, nodePort, "pod2b") // rules outlive the agent
	opts := r.parse("--cleanup")
	if err := Cleanup(context.Background(), opts, InNetns(r.net.Node1.Name, testr.New(t))); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range [][]string{{"nft", "list", "ruleset"}, {"iptables-save"}, {"ip6tables-save"}} {
		out, err := r.net.Node1.Exec(context.Background(), cmd...)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out, "svcproxy") || strings.Contains(out, "KUBE-") {
			t.Errorf("%s after --cleanup:\n%s", cmd[0], out)
		}
	}
	if _, err := r.net.Ext.Ask(context.Background(), "tcp", nodePort, time.Second); err == nil {
		t.Error("the NodePort still answers after --cleanup")
	}
}
