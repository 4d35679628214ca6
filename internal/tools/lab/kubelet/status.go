package kubelet

import (
	"context"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// report sends the pod's status when it differs from the last one sent:
// Running with its IP once set up, and Ready as its containers are.
func (p *pod) report(ctx context.Context, obj *corev1.Pod) {
	status := p.status(obj)
	key, _ := json.Marshal(status)
	if string(key) == p.reported {
		return
	}
	if err := p.k.patchStatus(ctx, obj, status, metav1.Now()); err != nil {
		if ctx.Err() == nil {
			p.k.logf("pod %s: status: %v", p.name(), err)
		}
		return
	}
	p.reported = string(key)
}

// status is the pod's status, without timestamps (so that it can be
// compared); patchStatus adds them.
func (p *pod) status(obj *corev1.Pod) corev1.PodStatus {
	allReady := len(p.containers) > 0
	var statuses []corev1.ContainerStatus
	for _, c := range p.containers {
		started, ready := c.started.Load(), c.ready.Load()
		state := corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(p.started)}}
		if c.hasExited() {
			ready, started = false, false
			state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: fmt.Sprint(c.err)}}
		}
		allReady = allReady && ready
		statuses = append(statuses, corev1.ContainerStatus{
			Name: c.spec.Name, Image: c.spec.Image, ImageID: "svcproxy-lab://" + c.spec.Image,
			ContainerID: fmt.Sprintf("svcproxy-lab://%s/%s/%d", obj.UID, c.spec.Name, c.restarts),
			Ready:       ready, Started: &started, RestartCount: int32(c.restarts),
			State: state,
		})
	}
	ready := corev1.ConditionFalse
	if allReady {
		ready = corev1.ConditionTrue
	}
	return corev1.PodStatus{
		Phase:  corev1.PodRunning,
		HostIP: p.k.node.IP.String(), HostIPs: []corev1.HostIP{{IP: p.k.node.IP.String()}, {IP: p.k.node.IPv6.String()}},
		PodIP: p.ip.String(), PodIPs: p.podIPs(),
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodReadyToStartContainers, Status: corev1.ConditionTrue},
			{Type: corev1.PodInitialized, Status: corev1.ConditionTrue},
			{Type: corev1.ContainersReady, Status: ready},
			{Type: corev1.PodReady, Status: ready},
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue},
		},
		ContainerStatuses: statuses,
	}
}

// reportFailed marks a pod that could not be set up as Failed.
func (p *pod) reportFailed(ctx context.Context, err error) {
	obj := p.latest.Load()
	status := corev1.PodStatus{Phase: corev1.PodFailed, Reason: "LabSetupFailed", Message: err.Error()}
	if err := p.k.patchStatus(ctx, obj, status, metav1.Now()); err != nil && ctx.Err() == nil {
		p.k.logf("pod %s: status: %v", p.name(), err)
	}
}

// patchStatus writes status with its timestamps as a merge patch of the
// status subresource (lists are replaced whole).
func (k *Kubelet) patchStatus(ctx context.Context, obj *corev1.Pod, status corev1.PodStatus, now metav1.Time) error {
	start := obj.CreationTimestamp
	status.StartTime = &start
	for i := range status.Conditions {
		status.Conditions[i].LastTransitionTime = now
	}
	data, err := json.Marshal(map[string]any{"status": status})
	if err != nil {
		return err
	}
	_, err = k.client.CoreV1().Pods(obj.Namespace).Patch(ctx, obj.Name, types.MergePatchType, data, metav1.PatchOptions{}, "status")
	return err
}

// podIPs are the pod's addresses, IPv4 first, once it has them.
func (p *pod) podIPs() []corev1.PodIP {
	if !p.ip.IsValid() {
		return nil
	}
	return []corev1.PodIP{{IP: p.ip.String()}, {IP: p.k.node.PodIPv6(p.ip).String()}}
}
