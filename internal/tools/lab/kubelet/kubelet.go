// Package kubelet is the lab's stand-in for the kubelet: it registers its
// node, and runs the pods the scheduler binds to it as network namespaces
// whose containers are built-in programs or real executables (package
// lab/workload) instead of images, with their configMap, secret and
// emptyDir volumes as directories. It reports each pod's IP, readiness (from the pod's readiness
// probes, sent from the node as the kubelet sends them) and termination, and
// honours graceful deletion: a deleted pod keeps serving, marked
// terminating, until its grace period ends; then it is stopped, its
// namespace removed and the Pod object deleted.
package kubelet

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/svcproxy/svcproxy/internal/tools/lab"
	"github.com/svcproxy/svcproxy/internal/tools/lab/workload"
)

// Kubelet runs one node's pods.
type Kubelet struct {
	lab    *lab.State
	node   lab.Node
	client kubernetes.Interface
	logf   func(string, ...any)
	// images picks a container's program (workload.Images); backoff is the
	// first restart delay of a container that exited. Tests change both.
	images  func(ref string) (workload.Program, bool)
	backoff time.Duration

	mu   sync.Mutex
	pods map[types.UID]*pod
	ips  map[netip.Addr]bool // pod addresses in use
}

// Run registers node and runs its pods until ctx ends. Pods keep their
// namespaces when it returns: `lab down` removes them with the rest.
func Run(ctx context.Context, st *lab.State, nodeName string, client kubernetes.Interface, logf func(string, ...any)) error {
	node, ok := st.Node(nodeName)
	if !ok {
		return fmt.Errorf("lab %s has no node %q", st.Name, nodeName)
	}
	k := &Kubelet{lab: st, node: node, client: client, logf: logf, images: workload.Images(filepath.Join(st.BinDir, "coredns")), backoff: restartBackoff,
		pods: map[types.UID]*pod{}, ips: map[netip.Addr]bool{}}
	if err := k.register(ctx); err != nil {
		return err
	}
	mine := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", nodeName).String()
		}))
	podInformer := mine.Core().V1().Pods().Informer()
	if _, err := podInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { k.observe(ctx, obj) },
		UpdateFunc: func(_, obj any) { k.observe(ctx, obj) },
		DeleteFunc: k.forget,
	}); err != nil {
		return err
	}
	mine.Start(ctx.Done())
	logf("kubelet: node %s (%s, %s, pods %s) ready", node.Name, node.Zone, node.IP, node.PodCIDR)
	go k.heartbeat(ctx)
	<-ctx.Done()
	mine.Shutdown()
	return nil
}

// observe starts a new pod or hands a known one its latest object.
func (k *Kubelet) observe(ctx context.Context, obj any) {
	p, ok := obj.(*corev1.Pod)
	if !ok || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if run := k.pods[p.UID]; run != nil {
		run.update(p)
		return
	}
	run := newPod(k, p)
	k.pods[p.UID] = run
	go run.run(ctx)
}

// forget stops a pod whose object is gone at once (a forced deletion).
func (k *Kubelet) forget(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if run := k.pods[p.UID]; run != nil {
		run.vanish()
	}
}

// done drops a finished pod.
func (k *Kubelet) done(uid types.UID) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.pods, uid)
}

// allocateIP takes the lowest free address of the node's pod CIDR.
func (k *Kubelet) allocateIP() (netip.Addr, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for i := 0; ; i++ {
		a := k.node.PodIP(i)
		if !k.node.PodCIDR.Contains(a.Next()) { // a is the broadcast address, or beyond
			return netip.Addr{}, fmt.Errorf("node %s: pod CIDR %s is full", k.node.Name, k.node.PodCIDR)
		}
		if !k.ips[a] {
			k.ips[a] = true
			return a, nil
		}
	}
}

// reserveIP takes a given address of the node's pod CIDR if it is free.
func (k *Kubelet) reserveIP(a netip.Addr) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.node.PodCIDR.Contains(a) || k.ips[a] {
		return false
	}
	k.ips[a] = true
	return true
}

func (k *Kubelet) releaseIP(a netip.Addr) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.ips, a)
}
