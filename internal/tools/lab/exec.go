package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcproxy/svcproxy/internal/netwire"
)

// Target finds the namespace of what `lab exec` names: a node ("node2"),
// the outside world ("client"), or a pod of the given Kubernetes namespace.
func (s *State) Target(ctx context.Context, namespace, name string) (string, error) {
	if n, ok := s.Node(name); ok {
		return n.Netns, nil
	}
	if name == "client" {
		return s.ClientNetns(), nil
	}
	client, err := s.Client()
	if err != nil {
		return "", err
	}
	pod, err := client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	netns := s.PodNetns(pod.Namespace, pod.Name, string(pod.UID))
	if !netwire.Exists(netns) {
		return "", fmt.Errorf("pod %s/%s has no network namespace (yet): phase %s, node %q", namespace, name, pod.Status.Phase, pod.Spec.NodeName)
	}
	return netns, nil
}

// Command returns `ip netns exec NETNS argv...`: the command runs in the
// namespace and, for a pod, sees the pod's resolv.conf.
func Command(ctx context.Context, netns string, argv ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", netns}, argv...)...)
}

// Kubectl returns a kubectl command pointed at the lab; it runs in the
// control plane's namespace, where the apiserver's address is.
func (s *State) Kubectl(ctx context.Context, args ...string) *exec.Cmd {
	cmd := Command(ctx, s.ControlPlaneNetns(), append([]string{filepath.Join(s.BinDir, "kubectl"), "--kubeconfig", s.Kubeconfig}, args...)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+s.Kubeconfig)
	return cmd
}
