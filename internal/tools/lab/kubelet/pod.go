package kubelet

import (
	"context"
	"fmt"
	"hash/fnv"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcproxy/svcproxy/internal/netwire"
)

// Bounds of a pod's life: how often it is looked at while nothing changes,
// and how long stopped containers get to finish their requests.
const (
	tick        = 500 * time.Millisecond
	stopTimeout = 10 * time.Second
)

// pod is one running pod: its namespace, address and containers.
type pod struct {
	k      *Kubelet
	latest atomic.Pointer[corev1.Pod]
	notify chan struct{} // a new object arrived (capacity 1)
	gone   chan struct{} // the object was deleted outright
	goneMu sync.Once

	netns       string
	ip          netip.Addr
	started     time.Time
	terminating atomic.Bool
	containers  []*container
	reported    string // the last status sent, to send only changes
}

func newPod(k *Kubelet, p *corev1.Pod) *pod {
	run := &pod{k: k, notify: make(chan struct{}, 1), gone: make(chan struct{}),
		netns: k.lab.PodNetns(p.Namespace, p.Name, string(p.UID))}
	run.latest.Store(p)
	return run
}

// update hands the pod its newest object.
func (p *pod) update(obj *corev1.Pod) {
	p.latest.Store(obj)
	select {
	case p.notify <- struct{}{}:
	default:
	}
}

// vanish tells the pod its object is gone.
func (p *pod) vanish() { p.goneMu.Do(func() { close(p.gone) }) }

func (p *pod) name() string {
	obj := p.latest.Load()
	return obj.Namespace + "/" + obj.Name
}

// run is the pod's whole life: set up, serve until deleted and its grace
// period is over (or its object vanishes), tear down.
func (p *pod) run(ctx context.Context) {
	defer p.k.done(p.latest.Load().UID)
	if err := p.setUp(ctx); err != nil {
		p.k.logf("pod %s: %v", p.name(), err)
		p.reportFailed(ctx, err)
		p.tearDown()
		return
	}
	p.k.logf("pod %s: running in %s, IP %s", p.name(), p.netns, p.ip)
	deleted := p.serve(ctx)
	p.tearDown()
	if deleted {
		p.finalDelete(ctx)
	}
}

// setUp makes the namespace (or takes over the one a previous run of this
// kubelet left, with its address) and starts the containers.
func (p *pod) setUp(ctx context.Context) error {
	obj := p.latest.Load()
	p.started = time.Now()
	if ip, ok := adoptable(obj, p.netns, netwire.Exists); ok && p.k.reserveIP(ip) {
		p.ip = ip
		p.k.logf("pod %s: taking over %s, IP %s", p.name(), p.netns, ip)
	} else {
		ip, err := p.k.allocateIP()
		if err != nil {
			return err
		}
		p.ip = ip
		if err := p.k.wire(p.netns, ip, vethName(string(obj.UID))); err != nil {
			return err
		}
	}
	if err := p.k.lab.WriteResolvConf(p.netns, obj.Namespace); err != nil {
		return err
	}
	if err := p.writeVolumes(ctx, obj); err != nil {
		return err
	}
	for _, c := range obj.Spec.Containers {
		p.containers = append(p.containers, p.startContainer(ctx, obj, c))
	}
	return nil
}

// adoptable says whether a pod already runs here, set up by an earlier run
// of the kubelet: it reports an IP and its namespace exists. Its containers
// died with that kubelet; the namespace, veth and address are still good.
func adoptable(obj *corev1.Pod, netns string, exists func(string) bool) (netip.Addr, bool) {
	ip, err := netip.ParseAddr(obj.Status.PodIP)
	return ip, err == nil && exists(netns)
}

// serve reports status until the pod must stop. It reports whether the
// pod's deletion was graceful (so the kubelet deletes the object at the end).
func (p *pod) serve(ctx context.Context) (graceful bool) {
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		obj := p.latest.Load()
		if obj.DeletionTimestamp != nil && !p.terminating.Swap(true) {
			p.k.logf("pod %s: terminating, serving until its grace period ends at %s",
				p.name(), obj.DeletionTimestamp.Format(time.TimeOnly))
		}
		p.restartExited(ctx, obj)
		p.probe(ctx, obj)
		p.report(ctx, obj)
		if p.terminating.Load() && (time.Now().After(obj.DeletionTimestamp.Time) || p.allExited()) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-p.gone:
			return false
		case <-p.notify:
		case <-t.C:
		}
	}
}

// tearDown stops the containers and removes the namespace and address.
func (p *pod) tearDown() {
	for _, c := range p.containers {
		c.stop()
	}
	deadline := time.After(stopTimeout)
	for _, c := range p.containers {
		select {
		case <-c.exited:
		case <-deadline:
		}
	}
	if err := p.k.unwire(p.netns); err != nil {
		p.k.logf("pod %s: %v", p.name(), err)
	}
	if p.ip.IsValid() {
		p.k.releaseIP(p.ip)
	}
	if err := os.RemoveAll(p.dir()); err != nil {
		p.k.logf("pod %s: %v", p.name(), err)
	}
	p.k.logf("pod %s: stopped", p.name())
}

// finalDelete removes the Pod object once its containers are gone, as the
// kubelet does when graceful termination completes.
func (p *pod) finalDelete(ctx context.Context) {
	obj := p.latest.Load()
	zero := int64(0)
	err := p.k.client.CoreV1().Pods(obj.Namespace).Delete(ctx, obj.Name, metav1.DeleteOptions{
		GracePeriodSeconds: &zero,
		Preconditions:      &metav1.Preconditions{UID: &obj.UID},
	})
	if err != nil && ctx.Err() == nil {
		p.k.logf("pod %s: final delete: %v", p.name(), err)
	}
}

// allExited reports whether every container has returned.
func (p *pod) allExited() bool {
	for _, c := range p.containers {
		if !c.hasExited() {
			return false
		}
	}
	return true
}

// vethName names the node's end of a pod's veth from the pod UID, within
// the kernel's 15 byte limit.
func vethName(uid string) string {
	h := fnv.New32a()
	h.Write([]byte(uid))
	return fmt.Sprintf("veth%08x", h.Sum32())
}
