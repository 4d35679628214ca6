package image_test

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	corev1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/svcproxy/svcproxy/internal/testkit/apiserver"
	"github.com/svcproxy/svcproxy/internal/testkit/objects"
	"github.com/svcproxy/svcproxy/internal/testkit/testnet"
	"github.com/svcproxy/svcproxy/internal/tools/controlplane"
	"github.com/svcproxy/svcproxy/internal/tools/image"
)

// The image's end-to-end test: the image is built by `make image`'s
// program, unpacked as a container runtime would, and svcproxy runs from it by
// chroot inside node1 of a testnet cluster, with the image's own nft and
// iptables, against a real kube-apiserver on the cluster's LAN. Real TCP
// from the outside client and from a pod must reach the Service's pods
// through it, in nftables and in iptables mode; `svcproxy --cleanup` from
// the image must remove the rules; and deploy/, naming this image, must
// pass the apiserver's own validation.

const (
	testVersion = "v0.0.0-imagetest"
	testCommit  = "0123456789abcdef0123456789abcdef01234567"
	webIP       = "10.96.0.10"
	nodePort    = 30080
	podPort     = 8080
)

func TestImageRunsAsANodesServiceProxy(t *testing.T) {
	testnet.RequireKernel(t, "nft", "chroot", "mount", "mknod")
	if os.Getenv(apiserver.EnvSkip) == "1" {
		t.Skip(apiserver.EnvSkip + "=1: skipping the image's test against an API server")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	archive, ref := buildImage(ctx, t)
	root := t.TempDir()
	cfg, err := image.Unpack(archive, root)
	if err != nil {
		t.Fatal(err)
	}
	checkVersion(ctx, t, root, cfg)

	cluster := testnet.New(t, testnet.Options{})
	for _, p := range cluster.PodList {
		p.Serve(t, podPort)
	}
	cp := startControlPlane(ctx, t, cluster)
	createObjects(ctx, t, cp.Client(), cluster)
	if err := os.MkdirAll(filepath.Join(root, "etc", "svcproxy"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := copyFile(cp.Kubeconfig(), filepath.Join(root, "etc", "svcproxy", "kubeconfig")); err != nil {
		t.Fatal(err)
	}
	checkDeployValidates(ctx, t, cluster.Ext, cp, ref)
	// iptables mode runs as a kube-proxy DaemonSet whose image was
	// swapped would: by kube-proxy's path.
	for _, run := range []struct{ mode, command string }{{"nftables", image.Entrypoint}, {"iptables", image.KubeProxyCommand}} {
		t.Run(run.mode, func(t *testing.T) { runMode(ctx, t, cluster, root, cfg, run.mode, run.command) })
	}
}

// buildImage builds the image as make image does: hack/image, run by go
// run, builds svcproxy and the archive. It returns the archive and the
// image's reference by digest.
func buildImage(ctx context.Context, t *testing.T) (string, string) {
	t.Helper()
	archive := filepath.Join(t.TempDir(), "image.tar")
	out, err := exec.CommandContext(ctx, "go", "run", "github.com/svcproxy/svcproxy/hack/image", "--out", archive,
		"--version", testVersion, "--commit", testCommit, "--epoch", "1764000000", "--allow-newer").CombinedOutput()
	t.Logf("make image's program:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			fields[f[0]] = f[1]
		}
	}
	if !strings.HasPrefix(fields["digest"], "sha256:") || fields["image"] != image.DefaultRepository+":"+testVersion {
		t.Fatalf("no image and digest in its output")
	}
	return archive, fields["image"] + "@" + fields["digest"]
}

// checkVersion runs `svcproxy version` from the image: it must say what the
// labels say.
func checkVersion(ctx context.Context, t *testing.T, root string, cfg *v1.ConfigFile) {
	t.Helper()
	out, err := exec.CommandContext(ctx, "chroot", root, image.Entrypoint, "version").CombinedOutput()
	labels := cfg.Config.Labels
	if err != nil || !strings.HasPrefix(string(out), "svcproxy "+labels["org.opencontainers.image.version"]+"\n") ||
		!strings.Contains(string(out), "commit:     "+labels["org.opencontainers.image.revision"]+"\n") ||
		!strings.Contains(string(out), "kube-proxy: "+labels["io.svcproxy.kube-proxy-compatible"]+" compatible") {
		t.Errorf("svcproxy version in the image: %v\n%s\nlabels: %v", err, out, labels)
	}
}

// startControlPlane runs etcd and kube-apiserver in the cluster's ext
// namespace, so that the apiserver is on the LAN (198.51.100.100:6443), as
// a control-plane host is for a node.
func startControlPlane(ctx context.Context, t *testing.T, cluster *testnet.Cluster) *controlplane.ControlPlane {
	t.Helper()
	dir, err := controlplane.Binaries(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := controlplane.Start(ctx, controlplane.Options{Dir: dir, WorkDir: t.TempDir(), Netns: cluster.Ext.Name, Address: testnet.ExtIPv4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)
	return cp
}

// createObjects creates node1, and Service web (ClusterIP and NodePort)
// with one pod on each node.
func createObjects(ctx context.Context, t *testing.T, client kubernetes.Interface, cluster *testnet.Cluster) {
	t.Helper()
	node := objects.Node("node1", "zone-a")
	for _, ip := range testnet.Node1Addrs.IPs() {
		node.Status.Addresses = append(node.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip.String()})
	}
	svc := objects.Service("default", "web", objects.ClusterIP(webIP), objects.Type(corev1.ServiceTypeNodePort),
		objects.Port("http", corev1.ProtocolTCP, 80, nodePort))
	svc.Spec.Ports[0].TargetPort.IntVal = podPort
	var eps []discovery.Endpoint
	for _, name := range []string{"pod1a", "pod2a"} {
		p := cluster.Pods[name]
		eps = append(eps, objects.Endpoint(p.IPv4.String(), objects.OnNode(p.Node)))
	}
	slice := objects.Slice("default", "web-1", "web", discovery.AddressTypeIPv4,
		[]discovery.EndpointPort{objects.EndpointPort("http", corev1.ProtocolTCP, podPort)}, eps...)
	if _, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.DiscoveryV1().EndpointSlices("default").Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// runMode runs the image's svcproxy on node1 in mode, by the path
// command, checks that the Service answers through it from outside and
// from a pod, stops it, and removes its rules with the image's `svcproxy
// --cleanup`.
func runMode(ctx context.Context, t *testing.T, cluster *testnet.Cluster, root string, cfg *v1.ConfigFile, mode, command string) {
	healthz := netip.AddrPortFrom(testnet.Node1Addrs.LANv4, 10256)
	proxy := startInImage(ctx, t, cluster.Node1, root, cfg, command,
		"--kubeconfig=/etc/svcproxy/kubeconfig", "--hostname-override=node1", "--proxy-mode="+mode,
		"--cluster-cidr="+testnet.ClusterCIDRv4.String(), "--healthz-bind-address="+healthz.String(),
		"--metrics-bind-address="+netip.AddrPortFrom(testnet.Node1Addrs.LANv4, 10249).String(), "--conntrack-max-per-core=0")
	nodePortAddr := netip.AddrPortFrom(testnet.Node1Addrs.LANv4, nodePort)
	clusterIP := netip.AddrPortFrom(netip.MustParseAddr(webIP), 80)
	waitAnswers(t, cluster.Ext, nodePortAddr, "pod1a", "pod2a")
	waitAnswers(t, cluster.Pods["pod1b"].NS, clusterIP, "pod1a", "pod2a")
	if resp, err := cluster.Ext.Get(healthz, "/healthz"); err != nil || resp.Code != 200 {
		t.Errorf("/healthz from outside: %d %v", resp.Code, err)
	}
	mine, other := rulesOf(ctx, cluster.Node1, mode), rulesOf(ctx, cluster.Node1, otherMode(mode))
	if mine == "" || other != "" {
		t.Errorf("in %s mode, node1 holds %s rules %q and %s rules %q", mode, mode, mine, otherMode(mode), other)
	}
	proxy.stop(t)

	cleanup := startInImage(ctx, t, cluster.Node1, root, cfg, image.Entrypoint, "--cleanup")
	if err := cleanup.wait(); err != nil {
		t.Errorf("svcproxy --cleanup from the image: %v\n%s", err, cleanup.out.String())
	}
	if left := rulesOf(ctx, cluster.Node1, mode); left != "" {
		t.Errorf("after --cleanup, node1 still holds %s rules: %s", mode, left)
	}
}

func otherMode(mode string) string {
	if mode == "nftables" {
		return "iptables"
	}
	return "nftables"
}

// rulesOf shows svcproxy's rules of one mode in ns, as the host's tools
// see them: the nftables table, or the iptables chain of Services; "" if
// there are none.
func rulesOf(ctx context.Context, ns *testnet.NS, mode string) string {
	if mode == "nftables" {
		out, err := ns.Exec(ctx, "nft", "list", "table", "ip", "svcproxy")
		if err != nil {
			return ""
		}
		return out
	}
	out, _ := ns.Exec(ctx, "iptables-nft-save", "-t", "nat")
	if !strings.Contains(out, ":KUBE-SERVICES") {
		return ""
	}
	return out
}

// waitAnswers waits, boundedly, until requests from ns to dst are answered
// by exactly the pods want.
func waitAnswers(t *testing.T, ns *testnet.NS, dst netip.AddrPort, want ...string) {
	t.Helper()
	var got map[string]int
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		got, err = map[string]int{}, nil
		for range 12 {
			var rep testnet.Reply
			if rep, err = ns.Ask(context.Background(), "tcp", dst, 2*time.Second); err != nil {
				break
			}
			got[rep.Pod]++
		}
		if err == nil && len(got) == len(want) && got[want[0]] > 0 && got[want[1]] > 0 {
			return
		}
	}
	t.Fatalf("%s from %s: answered by %v (last error %v), want %v", dst, ns, got, err, want)
}

// process is a command running in the image.
type process struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan error
}

// startInImage runs argv (the entrypoint and its arguments) from the image
// in ns as a container runtime would: in a mount namespace of its own (ip netns exec makes one)
// with /proc, /sys and a /dev holding null, zero and urandom mounted in
// the root, chrooted there, with the image's environment.
func startInImage(ctx context.Context, t *testing.T, ns *testnet.NS, root string, cfg *v1.ConfigFile, argv ...string) *process {
	t.Helper()
	for _, d := range []string{"proc", "sys", "dev"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	const runtime = `set -e
root=$1; shift
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount -t tmpfs -o mode=755 tmpfs "$root/dev"
mknod -m 666 "$root/dev/null" c 1 3
mknod -m 666 "$root/dev/zero" c 1 5
mknod -m 666 "$root/dev/urandom" c 1 9
exec chroot "$root" "$@"`
	args := append([]string{"netns", "exec", ns.Name, "/bin/sh", "-c", runtime, "sh", root}, argv...)
	p := &process{cmd: exec.CommandContext(ctx, "ip", args...), out: &syncBuffer{}, done: make(chan error, 1)}
	p.cmd.Env = cfg.Config.Env
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s in the image:\n%s", strings.Join(argv, " "), p.out.String())
		}
	})
	return p
}

// wait waits for the process to exit.
func (p *process) wait() error {
	err := <-p.done
	p.done <- err // for the cleanup
	return err
}

// stop asks svcproxy to stop, as the kubelet does, and waits.
func (p *process) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.wait(); err != nil {
		t.Errorf("svcproxy exited with %v after SIGTERM\n%s", err, p.out.String())
	}
}

// checkDeployValidates applies deploy/, its image set to ref, to the
// apiserver with --dry-run=server: the apiserver validates and defaults
// every object (and admission runs) without storing them.
func checkDeployValidates(ctx context.Context, t *testing.T, ext *testnet.NS, cp *controlplane.ControlPlane, ref string) {
	t.Helper()
	files, _ := filepath.Glob("../../../deploy/*.yaml")
	dir := t.TempDir()
	images := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		text := string(data)
		images += strings.Count(text, "image: "+image.DefaultRepository+":")
		text = strings.ReplaceAll(text, image.DefaultRepository+":latest", ref)
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if images != 2 {
		t.Fatalf("deploy/ names the image %d times, want 2 (the init container and the proxy)", images)
	}
	bin, err := controlplane.Binaries(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	out, err := ext.Exec(ctx, filepath.Join(bin, "kubectl"), "--kubeconfig="+cp.Kubeconfig(), "apply", "--dry-run=server", "-f", dir)
	t.Logf("kubectl apply --dry-run=server -f deploy/ (image %s):\n%s", ref, out)
	if err != nil {
		t.Fatalf("server-side dry run of deploy/: %v", err)
	}
	for _, want := range []string{"serviceaccount/svcproxy created (server dry run)", "clusterrole.rbac.authorization.k8s.io/system:svcproxy created (server dry run)",
		"clusterrolebinding.rbac.authorization.k8s.io/system:svcproxy created (server dry run)", "configmap/svcproxy created (server dry run)",
		"daemonset.apps/svcproxy created (server dry run)"} {
		if !strings.Contains(out, want) {
			t.Errorf("server-side dry run: no %q", want)
		}
	}
}

func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o600)
}

// syncBuffer is a bytes.Buffer safe for a process's writes and the test's
// reads at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
