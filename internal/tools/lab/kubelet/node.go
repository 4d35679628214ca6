package kubelet

import (
	"context"
	"encoding/json"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/svcproxy/svcproxy/internal/tools/controlplane/pinned"
)

// heartbeatPeriod is how often the Ready condition is renewed.
const heartbeatPeriod = 20 * time.Second

// register creates (or takes over) the Node object: zone and hostname
// labels, the pod CIDR, then its status.
func (k *Kubelet) register(ctx context.Context) error {
	n := k.node
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: n.Name,
			Labels: map[string]string{
				corev1.LabelHostname:          n.Name,
				corev1.LabelTopologyZone:      n.Zone,
				corev1.LabelTopologyRegion:    "lab",
				corev1.LabelOSStable:          "linux",
				corev1.LabelArchStable:        "amd64",
				"node.kubernetes.io/instance": "svcproxy-lab",
			},
		},
		Spec: corev1.NodeSpec{PodCIDR: n.PodCIDR.String(), PodCIDRs: []string{n.PodCIDR.String(), n.PodCIDRv6.String()}},
	}
	_, err := k.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	if err := k.patchNodeStatus(ctx); err != nil {
		return err
	}
	return k.untaint(ctx)
}

// untaint removes the not-ready taint the apiserver puts on a new Node. In
// a cluster the node lifecycle controller removes it once the node is
// Ready; the lab does not run that controller, whose eviction of pods on
// nodes that miss heartbeats it does not need.
func (k *Kubelet) untaint(ctx context.Context) error {
	node, err := k.client.CoreV1().Nodes().Get(ctx, k.node.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	taints := slices.DeleteFunc(slices.Clone(node.Spec.Taints), func(t corev1.Taint) bool {
		return t.Key == corev1.TaintNodeNotReady
	})
	if len(taints) == len(node.Spec.Taints) {
		return nil
	}
	node.Spec.Taints = taints
	_, err = k.client.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{})
	return err
}

// heartbeat renews the node's status until ctx ends.
func (k *Kubelet) heartbeat(ctx context.Context) {
	t := time.NewTicker(heartbeatPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := k.patchNodeStatus(ctx); err != nil && ctx.Err() == nil {
				k.logf("kubelet: node status: %v", err)
			}
		}
	}
}

// patchNodeStatus writes addresses, capacity, version and a Ready condition.
func (k *Kubelet) patchNodeStatus(ctx context.Context) error {
	now := metav1.Now()
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("2"),
		corev1.ResourceMemory: resource.MustParse("4Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	status := corev1.NodeStatus{
		Capacity:    capacity,
		Allocatable: capacity,
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: k.node.IP.String()},
			{Type: corev1.NodeInternalIP, Address: k.node.IPv6.String()},
			{Type: corev1.NodeHostName, Address: k.node.Name},
		},
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue,
			Reason: "KubeletReady", Message: "svcproxy lab kubelet is posting ready status",
			LastHeartbeatTime: now, LastTransitionTime: now,
		}},
		NodeInfo: corev1.NodeSystemInfo{
			KubeletVersion:  pinned.VersionOf(pinned.Kubernetes) + "-svcproxy-lab",
			OperatingSystem: "linux", Architecture: "amd64",
			ContainerRuntimeVersion: "svcproxy-lab://builtin",
		},
	}
	data, err := json.Marshal(map[string]any{"status": status})
	if err != nil {
		return err
	}
	_, err = k.client.CoreV1().Nodes().Patch(ctx, k.node.Name, types.StrategicMergePatchType, data, metav1.PatchOptions{}, "status")
	return err
}
