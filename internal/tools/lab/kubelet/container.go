package kubelet

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/svcproxy/svcproxy/internal/nsrun"
	"github.com/svcproxy/svcproxy/internal/tools/lab"
	"github.com/svcproxy/svcproxy/internal/tools/lab/workload"
)

// container is one running container of a pod.
type container struct {
	spec     corev1.Container
	started  atomic.Bool // the program accepts traffic
	ready    atomic.Bool // started, and the readiness probe agrees
	failures int         // consecutive probe failures
	lastRun  time.Time   // last probe
	err      error       // why the program returned early, valid after exited
	restarts int         // how many containers of this name ran before
	// restartAt is when an exited container is started again.
	restartAt time.Time
	cancel    context.CancelFunc
	exited    chan struct{}
	stopOnce  sync.Once
}

// startContainer runs the program of c's image in the pod.
func (p *pod) startContainer(ctx context.Context, obj *corev1.Pod, c corev1.Container) *container {
	run, known := p.k.images(c.Image)
	if !known {
		msg := fmt.Sprintf("image %q is not one the lab knows (jobs-api, coredns): running the jobs API demo server instead", c.Image)
		p.k.logf("pod %s: warning: container %s: %s", p.name(), c.Name, msg)
		p.k.event(ctx, obj, corev1.EventTypeWarning, "UnknownImage", msg)
	}
	cctx, cancel := context.WithCancel(context.Background())
	ct := &container{spec: c, cancel: cancel, exited: make(chan struct{})}
	env := p.env(obj, c)
	go func() {
		defer close(ct.exited)
		ct.err = run(cctx, env, func() { ct.started.Store(true) })
		if ct.err != nil {
			p.k.logf("pod %s: container %s: %v", p.name(), c.Name, ct.err)
		}
	}()
	return ct
}

// env is what the container's program sees of the pod.
func (p *pod) env(obj *corev1.Pod, c corev1.Container) workload.Env {
	netns := p.netns
	vars := p.vars(obj, c)
	args := make([]string, len(c.Args))
	for i, a := range c.Args {
		args[i] = p.hostPath(c, a)
	}
	for k, v := range vars {
		vars[k] = p.hostPath(c, v)
	}
	var ports []workload.ContainerPort
	for _, cp := range c.Ports {
		ports = append(ports, workload.ContainerPort{Name: cp.Name, Port: cp.ContainerPort, Protocol: string(cp.Protocol)})
	}
	prefix := fmt.Sprintf("pod %s/%s: ", p.name(), c.Name)
	return workload.Env{
		Pod: obj.Name, Namespace: obj.Namespace, PodIP: p.ip,
		Ports: ports, Vars: vars, Args: args,
		Listen:       func(network, addr string) (net.Listener, error) { return nsrun.Listen(netns, network, addr) },
		ListenPacket: func(network, addr string) (net.PacketConn, error) { return nsrun.ListenPacket(netns, network, addr) },
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return nsrun.Dial(ctx, netns, network, addr)
		},
		DNSServer:     net.JoinHostPort(lab.DNSIP.String(), "53"),
		ClusterDomain: lab.ClusterDomain,
		Exec:          p.execIn(c, vars),
		Terminating:   p.terminating.Load,
		Logf:          func(f string, a ...any) { p.k.logf(prefix+f, a...) },
	}
}

// vars is the container's environment: literal values, and the downward
// API's pod fields (metadata.name, metadata.namespace, metadata.uid,
// spec.nodeName, spec.serviceAccountName, status.podIP, status.hostIP).
// Other sources (ConfigMaps, Secrets, resources) are left out with a
// warning.
func (p *pod) vars(obj *corev1.Pod, c corev1.Container) map[string]string {
	fields := map[string]string{
		"metadata.name": obj.Name, "metadata.namespace": obj.Namespace, "metadata.uid": string(obj.UID),
		"spec.nodeName": p.k.node.Name, "spec.serviceAccountName": obj.Spec.ServiceAccountName,
		"status.podIP": p.ip.String(), "status.hostIP": p.k.node.IP.String(),
	}
	vars := map[string]string{}
	for _, v := range c.Env {
		switch {
		case v.ValueFrom == nil:
			vars[v.Name] = v.Value
		case v.ValueFrom.FieldRef != nil && fields[v.ValueFrom.FieldRef.FieldPath] != "":
			vars[v.Name] = fields[v.ValueFrom.FieldRef.FieldPath]
		default:
			p.k.logf("pod %s: warning: container %s: env %s: only values and pod fields are supported in the lab", p.name(), c.Name, v.Name)
		}
	}
	return vars
}

// Restart back-off, as the kubelet's: 10 s, doubling up to 5 minutes.
const (
	restartBackoff    = 10 * time.Second
	maxRestartBackoff = 5 * time.Minute
)

// restartExited starts again, after the back-off, the containers whose
// program returned, as restartPolicy Always (and OnFailure, for a program
// that failed) asks. Not while the pod terminates.
func (p *pod) restartExited(ctx context.Context, obj *corev1.Pod) {
	policy := obj.Spec.RestartPolicy
	if p.terminating.Load() || policy == corev1.RestartPolicyNever {
		return
	}
	for i, c := range p.containers {
		if !c.hasExited() || policy == corev1.RestartPolicyOnFailure && c.err == nil {
			continue
		}
		if c.restartAt.IsZero() {
			delay := min(p.k.backoff<<min(c.restarts, 10), maxRestartBackoff)
			c.restartAt = time.Now().Add(delay)
			p.k.logf("pod %s: container %s exited (%v), restarting in %v", p.name(), c.spec.Name, c.err, delay)
			continue
		}
		if time.Now().After(c.restartAt) {
			next := p.startContainer(ctx, obj, c.spec)
			next.restarts = c.restarts + 1
			p.containers[i] = next
		}
	}
}

// hasExited reports whether the program has returned.
func (c *container) hasExited() bool {
	select {
	case <-c.exited:
		return true
	default:
		return false
	}
}

// stop cancels the program; its exit closes exited.
func (c *container) stop() { c.stopOnce.Do(c.cancel) }

// probe runs the readiness probes that are due, from the node's namespace
// to the pod's IP as the kubelet does.
func (p *pod) probe(ctx context.Context, obj *corev1.Pod) {
	for _, c := range p.containers {
		rp := c.spec.ReadinessProbe
		switch {
		case !c.started.Load():
			c.ready.Store(false)
		case rp == nil || rp.HTTPGet == nil && rp.TCPSocket == nil:
			c.ready.Store(true) // no probe (or an exec probe, which the lab cannot run)
		case time.Since(c.lastRun) >= seconds(rp.PeriodSeconds, 10):
			c.lastRun = time.Now()
			p.runProbe(ctx, c, rp)
		}
	}
}

// runProbe sends one probe and applies the thresholds.
func (p *pod) runProbe(ctx context.Context, c *container, rp *corev1.Probe) {
	ctx, cancel := context.WithTimeout(ctx, seconds(rp.TimeoutSeconds, 1))
	defer cancel()
	err := p.sendProbe(ctx, c, rp)
	if err == nil {
		c.failures = 0
		c.ready.Store(true)
		return
	}
	c.failures++
	if c.failures >= int(max(rp.FailureThreshold, 1)) && c.ready.Swap(false) {
		p.k.logf("pod %s: container %s not ready: %v", p.name(), c.spec.Name, err)
	}
}

// sendProbe dials the pod from the node and, for an httpGet probe, wants a
// 2xx or 3xx answer.
func (p *pod) sendProbe(ctx context.Context, c *container, rp *corev1.Probe) error {
	node := p.k.node.Netns
	if rp.TCPSocket != nil {
		conn, err := nsrun.Dial(ctx, node, "tcp", p.target(c, rp.TCPSocket.Port))
		if err == nil {
			conn.Close()
		}
		return err
	}
	url := "http://" + p.target(c, rp.HTTPGet.Port) + rp.HTTPGet.Path
	code, _, err := nsrun.Get(ctx, node, url, 0) // ctx bounds it
	if err != nil {
		return err
	}
	if code < 200 || code >= 400 {
		return fmt.Errorf("GET %s: %d %s", url, code, http.StatusText(code))
	}
	return nil
}

// target is the pod's address and the probe's port, resolving a port name
// among the container's ports.
func (p *pod) target(c *container, port intstr.IntOrString) string {
	n := port.IntValue()
	if port.Type == intstr.String {
		for _, cp := range c.spec.Ports {
			if cp.Name == port.StrVal {
				n = int(cp.ContainerPort)
			}
		}
	}
	return net.JoinHostPort(p.ip.String(), strconv.Itoa(n))
}

// seconds turns a probe's seconds field into a duration, def if unset.
func seconds(v int32, def int32) time.Duration {
	if v <= 0 {
		v = def
	}
	return time.Duration(v) * time.Second
}

// event records an Event about the pod, as `kubectl describe` shows them.
func (k *Kubelet) event(ctx context.Context, obj *corev1.Pod, kind, reason, msg string) {
	now := metav1.Now()
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{GenerateName: obj.Name + ".", Namespace: obj.Namespace},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: obj.Namespace, Name: obj.Name,
			UID: obj.UID, APIVersion: "v1"},
		Type: kind, Reason: reason, Message: msg, Count: 1,
		FirstTimestamp: now, LastTimestamp: now,
		Source: corev1.EventSource{Component: "kubelet", Host: k.node.Name},
	}
	if _, err := k.client.CoreV1().Events(obj.Namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		k.logf("pod %s/%s: event %s: %v", obj.Namespace, obj.Name, reason, err)
	}
}
