package walkthrough_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcproxy/svcproxy/internal/nsrun"
	"github.com/svcproxy/svcproxy/internal/proxy/config"
	"github.com/svcproxy/svcproxy/internal/proxy/metrics"
	"github.com/svcproxy/svcproxy/internal/testkit/apiserver"
	"github.com/svcproxy/svcproxy/internal/testkit/vm"
	"github.com/svcproxy/svcproxy/internal/timescale"
	"github.com/svcproxy/svcproxy/internal/tools/controlplane"
	"github.com/svcproxy/svcproxy/internal/tools/lab"
	"github.com/svcproxy/svcproxy/internal/tools/lab/walkthrough"
)

// TestWalkthrough runs the seeds' walkthrough end to end in a 3-node lab,
// with svcproxy in each mode, and checks what it measured, then that
// `down` leaves nothing behind and the machine's own network namespace is
// as it was. The ipvs mode runs in the test VM when this kernel has no
// IPVS (the whole lab inside it, with the svcproxy built here).
func TestWalkthrough(t *testing.T) {
	self := prepare(t)
	for _, mode := range lab.ProxyModes {
		t.Run(mode, func(t *testing.T) {
			if mode == "ipvs" && vm.RunTest(t, vm.IPVS, labVM, selfEnv+"="+self) {
				return
			}
			walk(t, self, mode)
		})
	}
}

// labVM is the VM a lab runs in: the control plane, three nodes with
// their kubelet and svcproxy, CoreDNS and the pods.
var labVM = vm.Command{CPUs: 2, MemoryMiB: 4096}

// selfEnv passes the svcproxy that prepare built to the test in the VM.
const selfEnv = "SVCPROXY_TEST_SELF"

func walk(t *testing.T, self, mode string) {
	before := hostNetwork(t)
	name := "e2e" + mode[:3]
	ctx, cancel := context.WithTimeout(context.Background(), timescale.Bound(10*time.Minute))
	defer cancel()
	t.Cleanup(func() { lab.Down(context.Background(), name) })
	start := time.Now()
	st, err := lab.Up(ctx, lab.Options{Name: name, Self: self, ProxyMode: mode, Progress: logWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("lab up took %v", time.Since(start))
	t.Cleanup(func() { explainFailure(t, st, self) }) // runs before the Down above
	var out strings.Builder
	start = time.Now()
	report, err := walkthrough.Walk(ctx, st, &out)
	t.Logf("walkthrough took %v; its output:\n%s", time.Since(start), out.String())
	if err != nil {
		t.Fatal(err)
	}
	checkReport(t, st, report)
	checkBadInput(ctx, t, st, self)
	if vm.Inside() {
		// Headless Chromium under qemu's emulated CPU takes many minutes;
		// the page is the same in every mode, and is checked on this
		// machine in the others.
		t.Log("the lab's page is not checked in the VM")
	} else {
		checkPage(ctx, t, st)
	}
	checkNoFailures(ctx, t, st)
	explainFailure(t, st, self)
	procs, err := st.Processes()
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.Down(ctx, name); err != nil {
		t.Fatal(err)
	}
	checkGone(t, name, procs)
	if after := hostNetwork(t); after != before {
		t.Errorf("the machine's network namespace changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// checkReport checks the walkthrough's measurements.
func checkReport(t *testing.T, st *lab.State, r *walkthrough.Report) {
	t.Helper()
	if r.DNSAnswer != r.BackendIP {
		t.Errorf("DNS answered %q for backend-service, its ClusterIP is %q", r.DNSAnswer, r.BackendIP)
	}
	if !strings.HasPrefix(r.APIServerVersion, "v1.") {
		t.Errorf("a pod asking https://kubernetes.default.svc/version got %q", r.APIServerVersion)
	}
	checkSpread(t, "ClusterIP", r.ClusterIPSpread, 3, 30)
	if r.FromNode.Backend == "" {
		t.Errorf("from node1 to the ClusterIP: %+v", r.FromNode)
	}
	if ip, err := netip.ParseAddr(r.IPv6.ClientIP); err != nil || !lab.ClusterCIDRv6.Contains(ip) || r.IPv6.Backend == "" {
		t.Errorf("over IPv6 from the pod: %+v, want a backend that saw the pod's IPv6 address", r.IPv6)
	}
	checkSpread(t, "after scaling", r.ScaledSpread, 5, 50)
	nodeIPs := map[string]bool{} // a node's LAN IP, or its side of its pods' veths
	for _, n := range st.Nodes {
		nodeIPs[n.IP.String()] = true
		nodeIPs[n.Gateway().String()] = true
	}
	for _, a := range append(r.NodePort, r.LoadBalancer...) {
		if a.Err != "" || !nodeIPs[a.ClientIP] || a.Backend == "" {
			t.Errorf("through %s (externalTrafficPolicy Cluster): %+v, want an answer that saw a node IP", a.Via, a)
		}
	}
	if len(r.NodePort) != len(st.Nodes) {
		t.Errorf("NodePort answers: %d, want one per node (%d)", len(r.NodePort), len(st.Nodes))
	}
	for _, a := range r.Local {
		if a.Err != "" || a.ClientIP != lab.ClientIP.String() {
			t.Errorf("through the LB with externalTrafficPolicy Local: %+v, want the client's IP %s", a, lab.ClientIP)
		}
	}
	if len(r.Local) == 0 || len(r.HealthChecks) != len(st.Nodes) {
		t.Errorf("Local answers %d, health checks %d", len(r.Local), len(r.HealthChecks))
	}
	for _, hc := range r.HealthChecks {
		local := hc.Node == r.LocalNode
		if local && (hc.Status != 200 || hc.LocalEndpoints != 1) || !local && (hc.Status != 503 || hc.LocalEndpoints != 0) {
			t.Errorf("health check on %s (frontend pod on %s): %+v", hc.Node, r.LocalNode, hc)
		}
	}
	checkTraces(t, r)
	ro := r.Rollout
	if ro.Failures != 0 || ro.Requests < 20 || ro.Versions["v1"] == 0 || ro.Versions["v2"] == 0 {
		t.Errorf("rolling update: %+v, want no failures and answers from v1 and v2", ro)
	}
	checkRules(t, st.ProxyMode, r)
}

// checkRules: the rules shown for backend-service are its own: in ipvs
// mode its virtual server with its three endpoints as masqueraded real
// servers (after scaling to 5 and the rollout, 5), elsewhere rules naming
// it that DNAT.
func checkRules(t *testing.T, mode string, r *walkthrough.Report) {
	t.Helper()
	if mode != "ipvs" {
		if !strings.Contains(r.Rules, "default/backend-service") || !strings.Contains(strings.ToLower(r.Rules), "dnat") {
			t.Errorf("rules for backend-service:\n%s", r.Rules)
		}
		return
	}
	vs := regexp.MustCompile(`(?m)^TCP  ` + regexp.QuoteMeta(r.BackendIP) + `:3000 rr *$`)
	real := regexp.MustCompile(`(?m)^  -> 10\.244\.\d+\.\d+:3000 +Masq +1 `)
	if !vs.MatchString(r.Rules) || len(real.FindAllString(r.Rules, -1)) != 5 || !strings.Contains(r.Rules, " "+r.BackendIP+"/32 ") {
		t.Errorf("virtual server of backend-service (%s:3000, rr, 5 masqueraded real servers of weight 1, bound to kube-ipvs0):\n%s", r.BackendIP, r.Rules)
	}
}

// checkTraces: `svcproxy trace` of the client's NodePort connection drops
// it on a node without the frontend pod, for that reason, and forwards it
// with the client's address on the pod's node; the kernel agrees with the
// plan on both.
func checkTraces(t *testing.T, r *walkthrough.Report) {
	t.Helper()
	if len(r.Traces) != 2 {
		t.Fatalf("traces: %+v", r.Traces)
	}
	other, local := r.Traces[0].Result, r.Traces[1].Result
	if other.Kernel.Action != "DROP" || !strings.Contains(other.Plan.Reason, "no local endpoint") || len(other.Problems) > 0 {
		t.Errorf("trace on %s: %+v", r.Traces[0].Node, other)
	}
	if local.Kernel.Action != "FORWARD" || len(local.Kernel.Masqueraded) > 0 || len(local.Problems) > 0 || r.Traces[1].Node != r.LocalNode {
		t.Errorf("trace on %s: %+v", r.Traces[1].Node, local)
	}
}

// checkSpread wants every one of n pods to have answered some of total.
func checkSpread(t *testing.T, what string, spread map[string]int, n, total int) {
	t.Helper()
	sum := 0
	for _, c := range spread {
		sum += c
	}
	if len(spread) != n || sum != total {
		t.Errorf("%s: answers by pod %v, want %d requests spread over %d pods", what, spread, total, n)
	}
}

// checkNoFailures reads every node's svcproxy metrics from inside the node
// (127.0.0.1:10249, where kube-proxy serves them too) and fails on any
// failure they count: a failed sync, even one the retry healed, a netlink
// fallback, a failed conntrack cleaning.
func checkNoFailures(ctx context.Context, t *testing.T, st *lab.State) {
	t.Helper()
	for _, n := range st.Nodes {
		url := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(config.MetricsPort)) + "/metrics"
		code, body, err := nsrun.Get(ctx, n.Netns, url, lab.RequestTimeout)
		if err != nil || code != http.StatusOK {
			t.Errorf("%s: GET %s: %d %v", n.Name, url, code, err)
			continue
		}
		if failures, err := metrics.Failures(bytes.NewReader(body)); err != nil || len(failures) > 0 {
			t.Errorf("svcproxy on %s counted failures: %v %v", n.Name, failures, err)
		}
	}
}

// checkBadInput: a manifest the API rejects shows the API's error; the
// client pod's unknown image ran the demo server (the walkthrough used it)
// with a warning Event.
func checkBadInput(ctx context.Context, t *testing.T, st *lab.State, self string) {
	t.Helper()
	client, err := st.Client()
	if err != nil {
		t.Fatal(err)
	}
	events, err := client.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "reason=UnknownImage"})
	if err != nil || len(events.Items) != 1 || events.Items[0].InvolvedObject.Name != "curl-client" ||
		events.Items[0].Type != "Warning" || !strings.Contains(events.Items[0].Message, `"curlimages/curl"`) {
		t.Errorf("UnknownImage events: %+v, %v", events, err)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte(`apiVersion: v1
kind: Service
metadata:
  name: bad
spec:
  type: NodePort
  selector: {app: bad}
  ports:
  - port: 80
    nodePort: 70000
`), 0o644)
	out, err := exec.CommandContext(ctx, self, "lab", "kubectl", "--name="+st.Name, "apply", "-f", bad).CombinedOutput()
	if err == nil || !strings.Contains(string(out), `The Service "bad" is invalid`) || !strings.Contains(string(out), "spec.ports[0].nodePort") {
		t.Errorf("applying a bad Service: %v\n%s", err, out)
	}
}

// TestInterruptedUp interrupts `lab up` twice: with SIGINT, after which it
// must have removed everything itself, and with SIGKILL, after which
// `lab down` must.
func TestInterruptedUp(t *testing.T) {
	self := prepare(t)
	before := hostNetwork(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGKILL} {
		name := "e2eint"
		if sig == syscall.SIGKILL {
			name = "e2ekill"
		}
		t.Cleanup(func() { lab.Down(context.Background(), name) })
		procs := interruptUp(t, self, name, sig)
		if sig == syscall.SIGKILL {
			out, err := exec.Command(self, "lab", "down", "--name", name).CombinedOutput()
			if err != nil {
				t.Fatalf("lab down: %v\n%s", err, out)
			}
		}
		checkGone(t, name, procs)
	}
	if after := hostNetwork(t); after != before {
		t.Errorf("the machine's network namespace changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// interruptUp starts `lab up` and sends sig once the control plane is up
// and the nodes are starting; it returns the processes recorded by then.
func interruptUp(t *testing.T, self, name string, sig syscall.Signal) []lab.Process {
	t.Helper()
	cmd := exec.Command(self, "lab", "up", "--name", name)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		t.Logf("%s: %s", name, sc.Text())
		if strings.Contains(sc.Text(), "control plane in ") {
			time.Sleep(time.Second) // the nodes' processes are starting
			break
		}
	}
	st := &lab.State{Name: name, Dir: filepath.Join(lab.StateRoot, name)}
	procs, _ := st.Processes()
	cmd.Process.Signal(sig)
	for sc.Scan() { // until the pipe closes, when lab up has exited
		t.Logf("%s: %s", name, sc.Text())
	}
	err = cmd.Wait()
	t.Logf("lab up after %v: %v", sig, err)
	if len(procs) < 4 {
		t.Errorf("only %d processes were recorded before %v: %v", len(procs), sig, procs)
	}
	return procs
}

// checkGone wants no namespace, process, mount or file of the lab left.
func checkGone(t *testing.T, name string, procs []lab.Process) {
	t.Helper()
	st := &lab.State{Name: name, Dir: filepath.Join(lab.StateRoot, name)}
	if ns, _ := st.Namespaces(); len(ns) > 0 {
		t.Errorf("namespaces left: %v", ns)
	}
	if _, err := os.Stat(st.Dir); !os.IsNotExist(err) {
		t.Errorf("%s left (%v)", st.Dir, err)
	}
	if etc, _ := filepath.Glob("/etc/netns/" + name + "-*"); len(etc) > 0 {
		t.Errorf("files left: %v", etc)
	}
	for _, p := range procs {
		if p.Running && p.Alive() { // the same process, not a zombie
			t.Errorf("process %s (pid %d) still runs", p.Name, p.PID)
		}
	}
	if left := processesMentioning(st.Dir); len(left) > 0 {
		t.Errorf("processes of the lab still run: %v", left)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mounts), "/run/netns/"+name+"-") {
		t.Errorf("netns mounts left:\n%s", grep(string(mounts), "/run/netns/"+name+"-"))
	}
}

// processesMentioning lists running processes whose command line holds s.
func processesMentioning(s string) []string {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var out []string
	for _, d := range dirs {
		cmdline, err := os.ReadFile(d + "/cmdline")
		if err == nil && strings.Contains(string(cmdline), s) {
			stat, _ := os.ReadFile(d + "/stat")
			if !strings.Contains(string(stat), ") Z") {
				out = append(out, filepath.Base(d)+": "+strings.ReplaceAll(string(cmdline), "\x00", " "))
			}
		}
	}
	return out
}

// hostNetwork is the machine's own addresses, routes and rules, without
// the parts that change by themselves (lifetimes, counters, dates). The
// lab's namespaces are checked by checkGone; other tests' come and go.
func hostNetwork(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{
		{"ip", "-o", "addr", "show"}, {"ip", "route", "show", "table", "all"}, {"ip", "-6", "route", "show", "table", "all"},
		{"nft", "-s", "list", "ruleset"}, {"iptables-save"}, {"ip6tables-save"},
	} {
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		fmt.Fprintf(&b, "## %s\n%s", strings.Join(args, " "), volatile.ReplaceAllString(string(out), ""))
	}
	return b.String()
}

// volatile matches what changes without anyone changing the network.
var volatile = regexp.MustCompile(`(?m)(valid_lft \S+|preferred_lft \S+|expires \S+|\[\d+:\d+\]|^#.*$)`)

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// prepare skips without the API tests, and builds svcproxy and the
// control-plane binaries (so that timings do not include building).
func prepare(t *testing.T) string {
	t.Helper()
	if os.Getenv(apiserver.EnvSkip) == "1" {
		t.Skip(apiserver.EnvSkip + "=1: skipping the lab")
	}
	if self := os.Getenv(selfEnv); self != "" && vm.Inside() {
		return self // built on the host: go build would be slow in the VM
	}
	if _, err := controlplane.Binaries(context.Background(), true, "coredns"); err != nil {
		t.Fatal(err)
	}
	self := filepath.Join(t.TempDir(), "svcproxy")
	out, err := exec.Command("go", "build", "-o", self, "github.com/svcproxy/svcproxy/cmd/svcproxy").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return self
}

// logWriter sends progress lines to the test log.
type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// explainFailure, if the test failed and the lab is still up, logs what
// each node's svcproxy planned and the end of every lab process's log.
func explainFailure(t *testing.T, st *lab.State, self string) {
	if _, err := os.Stat(st.Dir); !t.Failed() || err != nil { // passed, or down already
		return
	}
	logs, _ := filepath.Glob(filepath.Join(st.Dir, "logs", "*.log"))
	for _, n := range st.Nodes {
		out, _ := exec.Command(self, "lab", "status", "--name", st.Name, "--node", n.Name).CombinedOutput()
		t.Logf("svcproxy lab status --node %s:\n%s", n.Name, out)
		if st.ProxyMode != "ipvs" {
			continue
		}
		for _, argv := range [][]string{{"ipvsadm", "-Ln"}, {"ip", "rule"}, {"iptables-save"}} {
			out, _ := lab.Command(context.Background(), n.Netns, argv...).CombinedOutput()
			t.Logf("%s: %s:\n%s", n.Name, strings.Join(argv, " "), out)
		}
	}
	for _, log := range logs {
		data, _ := os.ReadFile(log)
		if len(data) > 4096 {
			data = data[len(data)-4096:]
		}
		t.Logf("%s ends:\n%s", log, data)
	}
}
