package lab

import (
	"context"
	"fmt"
	"net"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/svcproxy/svcproxy/internal/tools/controlplane/pinned"
)

// DNSImage is the image of the cluster DNS pods. The lab's kubelet runs the
// CoreDNS that package pinned builds (the same version) for it.
var DNSImage = "registry.k8s.io/coredns/coredns:" + pinned.VersionOf(pinned.CoreDNS)

// corefile is kubeadm's Corefile without an upstream (the lab has no
// outside DNS to forward to). CoreDNS finds the API server through the
// kubeconfig named by $KUBECONFIG, since a lab pod has no service-account
// token mounted where in-cluster clients look for it.
const corefile = `.:53 {
    errors
    health {
        lameduck 2s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig {$KUBECONFIG}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    prometheus :9153
    cache 30
    loadbalance
}
`

// dnsLabels select the DNS pods, as kubeadm labels them.
var dnsLabels = map[string]string{"k8s-app": "kube-dns"}

// createDNS creates the cluster DNS as kubeadm does: a ServiceAccount with
// the system:coredns role, the coredns ConfigMap, a two-replica Deployment
// kube-system/coredns behind Service kube-dns on DNSIP. A Secret holds the
// kubeconfig CoreDNS uses: the service account's token, and the API server
// at the kubernetes Service's ClusterIP, so CoreDNS reaches it through
// svcproxy like any in-cluster client.
func createDNS(ctx context.Context, client kubernetes.Interface, caPEM []byte) error {
	const ns = "kube-system"
	if _, err := client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "coredns", Namespace: ns}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	if err := createDNSRole(ctx, client); err != nil {
		return err
	}
	kubeconfig, err := dnsKubeconfig(ctx, client, caPEM)
	if err != nil {
		return err
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "coredns-kubeconfig", Namespace: ns},
		Data:       map[string][]byte{"kubeconfig": kubeconfig},
	}
	if _, err := client.CoreV1().Secrets(ns).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		return err
	}
	config := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "coredns", Namespace: ns},
		Data:       map[string]string{"Corefile": corefile},
	}
	if _, err := client.CoreV1().ConfigMaps(ns).Create(ctx, config, metav1.CreateOptions{}); err != nil {
		return err
	}
	if _, err := client.AppsV1().Deployments(ns).Create(ctx, dnsDeployment(), metav1.CreateOptions{}); err != nil {
		return err
	}
	_, err = client.CoreV1().Services(ns).Create(ctx, dnsService(), metav1.CreateOptions{})
	return err
}

// createDNSRole grants the coredns service account what CoreDNS's
// kubernetes plugin watches.
func createDNSRole(ctx context.Context, client kubernetes.Interface) error {
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "system:coredns"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"endpoints", "services", "pods", "namespaces"}, Verbs: []string{"list", "watch"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
		},
	}
	if _, err := client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		return err
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "system:coredns"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:coredns"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "coredns", Namespace: "kube-system"}},
	}
	_, err := client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{})
	return err
}

// dnsKubeconfig is a kubeconfig for the coredns service account (a token
// from the TokenRequest API, valid for 30 days) and the API server at the
// kubernetes Service's ClusterIP.
func dnsKubeconfig(ctx context.Context, client kubernetes.Interface, caPEM []byte) ([]byte, error) {
	days30 := int64(30 * 24 * 3600)
	tr, err := client.CoreV1().ServiceAccounts("kube-system").CreateToken(ctx, "coredns",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &days30}}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("token for kube-system/coredns: %w", err)
	}
	server := "https://" + net.JoinHostPort(KubernetesIP.String(), "443")
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["lab"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos["coredns"] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["coredns"] = &clientcmdapi.Context{Cluster: "lab", AuthInfo: "coredns"}
	cfg.CurrentContext = "coredns"
	return clientcmd.Write(*cfg)
}

func dnsDeployment() *appsv1.Deployment {
	replicas := int32(2)
	mounts := []corev1.VolumeMount{
		{Name: "config-volume", MountPath: "/etc/coredns", ReadOnly: true},
		{Name: "kubeconfig", MountPath: "/etc/coredns-kubeconfig", ReadOnly: true},
	}
	container := corev1.Container{
		Name: "coredns", Image: DNSImage,
		Args:         []string{"-conf", "/etc/coredns/Corefile"},
		Env:          []corev1.EnvVar{{Name: "KUBECONFIG", Value: "/etc/coredns-kubeconfig/kubeconfig"}},
		VolumeMounts: mounts,
		Ports: []corev1.ContainerPort{
			{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
			{Name: "dns-tcp", ContainerPort: 53, Protocol: corev1.ProtocolTCP},
			{Name: "metrics", ContainerPort: 9153, Protocol: corev1.ProtocolTCP},
		},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(8181)}},
			PeriodSeconds: 1,
		},
	}
	volumes := []corev1.Volume{
		{Name: "config-volume", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "coredns"},
			Items:                []corev1.KeyToPath{{Key: "Corefile", Path: "Corefile"}},
		}}},
		{Name: "kubeconfig", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "coredns-kubeconfig"}}},
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "coredns", Namespace: "kube-system", Labels: dnsLabels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: dnsLabels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: dnsLabels},
				Spec: corev1.PodSpec{
					ServiceAccountName: "coredns",
					Containers:         []corev1.Container{container},
					Volumes:            volumes,
				},
			},
		},
	}
}

func dnsService() *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: "kube-system", Labels: dnsLabels},
		Spec: corev1.ServiceSpec{
			ClusterIP: DNSIP.String(),
			Selector:  dnsLabels,
			Ports: []corev1.ServicePort{
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(53)},
				{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(53)},
				{Name: "metrics", Port: 9153, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(9153)},
			},
		},
	}
}
