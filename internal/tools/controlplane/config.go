package controlplane

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/svcproxy/svcproxy/internal/nsrun"
)

// File names inside the work directory.
const (
	fileCA         = "ca.crt"
	fileServerCert = "apiserver.crt"
	fileServerKey  = "apiserver.key"
	fileSAPub      = "sa.pub"
	fileSAKey      = "sa.key"
	fileTokens     = "tokens.csv"
	fileKubeconfig = "kubeconfig"
	dirEtcdData    = "etcd-data"
	dirCerts       = "apiserver-certs"
)

// etcdQuotaBytes is etcd's backend quota, 4 GiB: room for large benchmarks.
const etcdQuotaBytes = 4 << 30

// writeFiles generates the PKI and token, writes them with the kubeconfig,
// and fills in the apiserver flags and clients. ports are etcd client, etcd
// peer and apiserver.
func (c *ControlPlane) writeFiles(ports []int, serviceIP net.IP) error {
	if err := os.MkdirAll(c.opts.WorkDir, 0o755); err != nil {
		return err
	}
	ca, err := newCA()
	if err != nil {
		return err
	}
	serving, err := newServingCert(ca, serviceIP, c.opts.Address)
	if err != nil {
		return err
	}
	sa, err := newServiceAccountKey()
	if err != nil {
		return err
	}
	token, err := newToken()
	if err != nil {
		return err
	}
	err = writeFiles(map[string][]byte{
		c.path(fileCA):         ca.cert,
		c.path(fileServerCert): serving.cert,
		c.path(fileServerKey):  serving.key,
		c.path(fileSAPub):      sa.cert,
		c.path(fileSAKey):      sa.key,
		c.path(fileTokens):     fmt.Appendf(nil, "%s,%s,%s,\"system:masters\"\n", token, AdminUser, AdminUser),
	})
	if err != nil {
		return err
	}
	c.apiArgs = c.apiserverArgs(ports[2])
	c.etcdPeer = "http://" + hostPort(ports[1])
	return c.setupClients(ca.cert, token)
}

// etcdArgs are etcd's flags: loopback only, no fsync (data is throwaway).
func (c *ControlPlane) etcdArgs() []string {
	return []string{
		"--name=default",
		"--data-dir=" + c.path(dirEtcdData),
		"--listen-client-urls=" + c.etcdURL,
		"--advertise-client-urls=" + c.etcdURL,
		"--listen-peer-urls=" + c.etcdPeer,
		"--initial-advertise-peer-urls=" + c.etcdPeer,
		"--initial-cluster=default=" + c.etcdPeer,
		"--unsafe-no-fsync",
		"--quota-backend-bytes=" + strconv.Itoa(etcdQuotaBytes),
		"--log-level=warn",
	}
}

// apiserverArgs are kube-apiserver's flags.
func (c *ControlPlane) apiserverArgs(port int) []string {
	addr := c.opts.apiAddress().String()
	// On loopback, the lease reconciler would publish 127.0.0.1 as the
	// endpoint of default/kubernetes, which validation rejects; the Service
	// itself is still created. In a namespace of its own the apiserver
	// publishes its address, as in a real cluster.
	reconciler := "lease"
	if c.opts.Netns == "" {
		reconciler = "none"
	}
	return []string{
		"--advertise-address=" + addr,
		"--endpoint-reconciler-type=" + reconciler,
		"--bind-address=" + addr,
		"--secure-port=" + strconv.Itoa(port),
		"--etcd-servers=" + c.etcdURL,
		"--service-cluster-ip-range=" + c.opts.ServiceCIDR,
		"--cert-dir=" + c.path(dirCerts),
		"--tls-cert-file=" + c.path(fileServerCert),
		"--tls-private-key-file=" + c.path(fileServerKey),
		"--service-account-key-file=" + c.path(fileSAPub),
		"--service-account-signing-key-file=" + c.path(fileSAKey),
		"--service-account-issuer=" + ServiceAccountIssuer,
		"--authorization-mode=RBAC",
		"--token-auth-file=" + c.path(fileTokens),
		"--disable-admission-plugins=ServiceAccount",
		"--enable-priority-and-fairness=false",
		"--allow-privileged=true",
		"--profiling=false",
	}
}

// Controllers are the kube-controller-manager controllers Options.Controllers
// runs: workloads, EndpointSlices, and the garbage and namespace collectors
// that deletions need. Node lifecycle and IPAM are the lab's node agents'
// business, service accounts and tokens are not used.
var Controllers = []string{
	"deployment", "replicaset", "statefulset", "daemonset", "job",
	"endpointslice", "endpointslicemirroring", "garbagecollector", "namespace",
}

// controllerManagerArgs are kube-controller-manager's flags: no serving
// port, no leader election, the admin kubeconfig.
func (c *ControlPlane) controllerManagerArgs() []string {
	return []string{
		"--kubeconfig=" + c.kubeconfig,
		"--controllers=" + strings.Join(Controllers, ","),
		"--leader-elect=false",
		"--secure-port=0",
		"--use-service-account-credentials=false",
		"--endpointslice-updates-batch-period=0s",
		"--v=1",
	}
}

// schedulerArgs are kube-scheduler's flags, in the same spirit.
func (c *ControlPlane) schedulerArgs() []string {
	return []string{
		"--kubeconfig=" + c.kubeconfig,
		"--leader-elect=false",
		"--secure-port=0",
		"--v=1",
	}
}

// setupClients builds the rest config, the clientset and the kubeconfig.
func (c *ControlPlane) setupClients(caPEM []byte, token string) error {
	c.config = &rest.Config{
		Host:            c.apiURL,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: caPEM},
		QPS:             500,
		Burst:           1000,
		Dial:            c.dial,
	}
	client, err := kubernetes.NewForConfig(c.config)
	if err != nil {
		return err
	}
	c.client = client
	c.kubeconfig = c.path(fileKubeconfig)
	return clientcmd.WriteToFile(kubeconfig(c.apiURL, caPEM, token), c.kubeconfig)
}

// kubeconfig is a one-context kubeconfig for the admin user.
func kubeconfig(server string, caPEM []byte, token string) clientcmdapi.Config {
	const name = "svcproxy-controlplane"
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[name] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[AdminUser] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: AdminUser, Namespace: "default"}
	cfg.CurrentContext = name
	return *cfg
}

// dial connects from inside Options.Netns (from here if it is empty).
func (c *ControlPlane) dial(ctx context.Context, network, address string) (net.Conn, error) {
	return nsrun.Dial(ctx, c.opts.Netns, network, address)
}

// etcdHealthy asks etcd's /health endpoint.
func (c *ControlPlane) etcdHealthy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.etcdURL+"/health", nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: &http.Transport{DialContext: c.dial}}).Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("etcd /health: %s", resp.Status)
	}
	return nil
}

// apiReady checks /readyz, then that the bootstrap controller has created
// the default/kubernetes Service, which implies the default namespace and
// the default ServiceCIDR exist.
func (c *ControlPlane) apiReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var code int
	res := c.client.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).StatusCode(&code)
	if code != http.StatusOK {
		body, _ := res.Raw()
		return fmt.Errorf("/readyz: %d %v %s", code, res.Error(), body)
	}
	_, err := c.client.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	return err
}
