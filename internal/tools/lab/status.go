package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"text/tabwriter"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/svcproxy/svcproxy/internal/nsrun"
)

// Client returns an admin client of the lab's apiserver that connects from
// the control plane's namespace, for commands run on the machine.
func (s *State) Client() (kubernetes.Interface, error) {
	return s.ClientIn(s.ControlPlaneNetns())
}

// ClientIn returns an admin client that connects from inside netns ("" for
// the caller's own, as the lab's processes do from where they run).
func (s *State) ClientIn(netns string) (kubernetes.Interface, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", s.Kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 100, 200
	cfg.Dial = func(ctx context.Context, network, address string) (net.Conn, error) {
		return nsrun.Dial(ctx, netns, network, address)
	}
	return kubernetes.NewForConfig(cfg)
}

// Status writes the lab's processes, nodes, pods and Services.
func (s *State) Status(ctx context.Context, w io.Writer) error {
	client, err := s.Client()
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	if err := s.writeProcesses(tw); err != nil {
		return err
	}
	if err := writeNodes(ctx, tw, client); err != nil {
		return err
	}
	if err := s.writePods(ctx, tw, client); err != nil {
		return err
	}
	return writeServices(ctx, tw, client)
}

func (s *State) writeProcesses(w io.Writer) error {
	procs, err := s.Processes()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "PROCESS\tPID\tNETNS\tSTATE\n")
	for _, p := range procs {
		state := "running"
		if !p.Running {
			state = "EXITED (see " + s.path("logs", p.Name+".log") + ")"
		}
		netns := p.Netns
		if netns == "" {
			netns = "(the machine's)"
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", p.Name, p.PID, netns, state)
	}
	fmt.Fprintln(w)
	return nil
}

func writeNodes(ctx context.Context, w io.Writer, client kubernetes.Interface) error {
	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "NODE\tSTATUS\tINTERNAL-IP\tZONE\tPOD-CIDR\n")
	for _, n := range nodes.Items {
		status := "NotReady"
		if NodeReady(&n) {
			status = "Ready"
		}
		ip := ""
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				ip = a.Address
			}
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", n.Name, status, ip, n.Labels[corev1.LabelTopologyZone], n.Spec.PodCIDR)
	}
	fmt.Fprintln(w)
	return nil
}

func (s *State) writePods(ctx context.Context, w io.Writer, client kubernetes.Interface) error {
	pods, err := client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	sort.Slice(pods.Items, func(i, j int) bool {
		a, b := pods.Items[i], pods.Items[j]
		return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
	})
	fmt.Fprintf(w, "POD\tREADY\tSTATUS\tIP\tNODE\tNETNS\n")
	for _, p := range pods.Items {
		fmt.Fprintf(w, "%s/%s\t%v\t%s\t%s\t%s\t%s\n", p.Namespace, p.Name, PodReady(&p), podPhase(&p),
			p.Status.PodIP, p.Spec.NodeName, s.PodNetns(p.Namespace, p.Name, string(p.UID)))
	}
	fmt.Fprintln(w)
	return nil
}

func writeServices(ctx context.Context, w io.Writer, client kubernetes.Interface) error {
	svcs, err := client.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "SERVICE\tTYPE\tCLUSTER-IP\tEXTERNAL-IP\tPORT(S)\tTRAFFIC-POLICY\n")
	for _, svc := range svcs.Items {
		var ext, ports []string
		for _, in := range svc.Status.LoadBalancer.Ingress {
			ext = append(ext, in.IP)
		}
		ext = append(ext, svc.Spec.ExternalIPs...)
		for _, p := range svc.Spec.Ports {
			port := fmt.Sprintf("%d/%s", p.Port, p.Protocol)
			if p.NodePort != 0 {
				port = fmt.Sprintf("%d:%d/%s", p.Port, p.NodePort, p.Protocol)
			}
			ports = append(ports, port)
		}
		policy := "-"
		if svc.Spec.ExternalTrafficPolicy != "" {
			policy = string(svc.Spec.ExternalTrafficPolicy)
			if svc.Spec.HealthCheckNodePort != 0 {
				policy += fmt.Sprintf(" (health %d)", svc.Spec.HealthCheckNodePort)
			}
		}
		fmt.Fprintf(w, "%s/%s\t%s\t%s\t%s\t%s\t%s\n", svc.Namespace, svc.Name, svc.Spec.Type,
			strings.Join(svc.Spec.ClusterIPs, ","), orNone(ext), strings.Join(ports, ","), policy)
	}
	return nil
}

// NodeReady reports whether the node's Ready condition is true.
func NodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// PodReady reports whether the pod's Ready condition is true.
func PodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func podPhase(p *corev1.Pod) string {
	if p.DeletionTimestamp != nil {
		return "Terminating"
	}
	return string(p.Status.Phase)
}

func orNone(ss []string) string {
	if len(ss) == 0 {
		return "<none>"
	}
	return strings.Join(ss, ",")
}
