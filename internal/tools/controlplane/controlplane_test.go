package controlplane_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/svcproxy/svcproxy/internal/netwire"
	"github.com/svcproxy/svcproxy/internal/testkit/apiserver"
	"github.com/svcproxy/svcproxy/internal/tools/controlplane"
)

func TestControlPlane(t *testing.T) {
	begin := time.Now()
	cp := apiserver.New(t)
	t.Logf("Binaries+Start took %v", time.Since(begin))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := cp.Client()

	createObjects(ctx, t, client)
	checkObjects(ctx, t, client)
	checkKubeconfig(ctx, t, cp.Kubeconfig())

	begin = time.Now()
	cp.StopAPIServer()
	t.Logf("StopAPIServer took %v", time.Since(begin))
	if _, err := client.CoreV1().Services("default").List(ctx, metav1.ListOptions{}); err == nil {
		t.Fatal("List succeeded with the apiserver stopped")
	}
	begin = time.Now()
	if err := cp.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("StartAPIServer took %v", time.Since(begin))
	checkObjects(ctx, t, client)

	pids := cp.PIDs()
	if len(pids) != 2 {
		t.Fatalf("pids = %v, want etcd and kube-apiserver", pids)
	}
	begin = time.Now()
	cp.Stop()
	t.Logf("Stop took %v", time.Since(begin))
	cp.Stop() // idempotent
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process %d still exists after Stop (kill 0: %v)", pid, err)
		}
	}
	if err := cp.StartAPIServer(ctx); err == nil {
		t.Error("StartAPIServer after Stop succeeded")
	}
}

// createObjects creates a Service, an EndpointSlice and a Node.
func createObjects(ctx context.Context, t *testing.T, client kubernetes.Interface) {
	t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{
			ClusterIP: "10.96.10.10",
			Ports:     []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}},
		},
	}
	if _, err := client.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:   "web-1",
			Labels: map[string]string{discoveryv1.LabelServiceName: "web"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{"10.244.1.5"},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)},
			NodeName:   ptr("node-1"),
		}},
		Ports: []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080)), Protocol: ptr(corev1.ProtocolTCP)}},
	}
	if _, err := client.DiscoveryV1().EndpointSlices("default").Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}}
	if _, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// checkObjects lists the objects createObjects made.
func checkObjects(ctx context.Context, t *testing.T, client kubernetes.Interface) {
	t.Helper()
	svc, err := client.CoreV1().Services("default").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svc.Spec.ClusterIP != "10.96.10.10" {
		t.Errorf("ClusterIP = %q", svc.Spec.ClusterIP)
	}
	slices, err := client.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{
		LabelSelector: discoveryv1.LabelServiceName + "=web",
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(slices.Items) != 1 || slices.Items[0].Endpoints[0].Addresses[0] != "10.244.1.5" {
		t.Errorf("EndpointSlices = %+v", slices.Items)
	}
	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != 1 || nodes.Items[0].Name != "node-1" {
		t.Errorf("Nodes = %+v", nodes.Items)
	}
}

// checkKubeconfig uses the written kubeconfig to read the Service.
func checkKubeconfig(ctx context.Context, t *testing.T, path string) {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Services("default").Get(ctx, "web", metav1.GetOptions{}); err != nil {
		t.Fatalf("via kubeconfig: %v", err)
	}
}

func TestStartErrors(t *testing.T) {
	if _, err := controlplane.Start(context.Background(), controlplane.Options{}); err == nil {
		t.Error("Start with empty Options succeeded")
	}
	dir := t.TempDir()
	if _, err := controlplane.Start(context.Background(), controlplane.Options{Dir: dir, WorkDir: dir}); err == nil {
		t.Error("Start without binaries succeeded")
	}
	if _, err := controlplane.Start(context.Background(), controlplane.Options{Dir: dir, WorkDir: dir, ServiceCIDR: "bogus"}); err == nil {
		t.Error("Start with a bad ServiceCIDR succeeded")
	}
}

// TestStartExit checks that a process exiting during startup is reported
// with its log, using stand-in binaries.
func TestStartExit(t *testing.T) {
	dir := t.TempDir()
	script := []byte("#!/bin/sh\necho boom-from-fake; exit 3\n")
	for _, name := range []string{"etcd", "kube-apiserver"} {
		if err := os.WriteFile(dir+"/"+name, script, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	_, err := controlplane.Start(context.Background(), controlplane.Options{Dir: dir, WorkDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "boom-from-fake") {
		t.Fatalf("Start with exiting etcd: %v", err)
	}
}

// TestBinariesDir: the pins name the cache's subdirectory.
func TestBinariesDir(t *testing.T) {
	dir, err := controlplane.BinariesDir()
	if err != nil || !strings.HasSuffix(dir, "/.cache/controlplane/kubernetes-v1.36.3-etcd-v3.6.8") {
		t.Errorf("BinariesDir() = %s, %v", dir, err)
	}
}

// ptr returns a pointer to v.
func ptr[T any](v T) *T { return &v }

// TestControlPlaneInNetns runs the control plane inside a namespace of its
// own, as the lab does: the apiserver serves on the namespace's address,
// publishes it as default/kubernetes's endpoint, and every process lives
// in that namespace.
func TestControlPlaneInNetns(t *testing.T) {
	apiserver.SkipIfUnwanted(t)
	ctx, cancel := context.WithTimeout(context.Background(), apiserver.BinariesTimeout)
	defer cancel()
	dir, err := controlplane.Binaries(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	netns, addr := fmt.Sprintf("spt-%d-0-cp", os.Getpid()), netip.MustParseAddr("192.0.2.10")
	makeNetns(t, netns, addr)
	cp, err := controlplane.Start(ctx, controlplane.Options{Dir: dir, WorkDir: t.TempDir(), Netns: netns, Address: addr, Controllers: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Stop()
	if want := "https://192.0.2.10:6443"; cp.URL() != want {
		t.Errorf("URL = %s, want %s", cp.URL(), want)
	}
	var got string
	// The lease reconciler writes the slice soon after the start; a busy
	// machine may take a while.
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		slices, err := cp.Client().DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=kubernetes"})
		if err == nil && len(slices.Items) == 1 && len(slices.Items[0].Endpoints) == 1 && len(slices.Items[0].Ports) == 1 {
			got = slices.Items[0].Endpoints[0].Addresses[0] + ":" + strconv.Itoa(int(*slices.Items[0].Ports[0].Port))
			break
		}
	}
	if got != "192.0.2.10:6443" {
		t.Errorf("default/kubernetes endpoint %q, want 192.0.2.10:6443", got)
	}
	inode := func(path string) uint64 {
		var st syscall.Stat_t
		if err := syscall.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	for name, pid := range cp.PIDs() {
		if inode(fmt.Sprintf("/proc/%d/ns/net", pid)) != inode("/run/netns/"+netns) {
			t.Errorf("%s (pid %d) runs outside %s", name, pid, netns)
		}
	}
	if len(cp.PIDs()) != 4 {
		t.Errorf("PIDs = %v, want etcd, kube-apiserver, kube-controller-manager, kube-scheduler", cp.PIDs())
	}
}

// makeNetns creates the namespace name with lo up and addr on a veth
// interface, and deletes it when the test ends.
func makeNetns(t *testing.T, name string, addr netip.Addr) {
	if err := netwire.Add(name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netwire.Delete(name) })
	ns, err := netwire.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	err = errors.Join(ns.Up("lo"), ns.AddVeth("eth0", ns, "eth1"), ns.Up("eth1"),
		ns.AddAddrs("eth0", netip.PrefixFrom(addr, 24)), ns.Up("eth0"))
	if err != nil {
		t.Fatal(err)
	}
}
