// Package walkthrough is the seeds' two-tier walkthrough, run in the lab:
// the backend behind a ClusterIP Service and its spread over pods, cluster
// DNS and the API server behind the kubernetes Service, the frontend
// behind a NodePort and a LoadBalancer Service, the client IP each one
// shows the pods, externalTrafficPolicy Local and its health-check node
// port, a scale-up and a rolling update under load, and the rules svcproxy
// programmed for one Service. It prints what a reader of the seeds wants
// to see and returns the measurements, which the end-to-end test checks.
package walkthrough

import (
	"context"
	"fmt"
	"io"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/svcproxy/svcproxy/internal/proxy/explain"
	"github.com/svcproxy/svcproxy/internal/tools/lab"
)

// Report is what the walkthrough measured.
type Report struct {
	// BackendIP is backend-service's ClusterIP and DNSAnswer what the
	// cluster DNS answered for its name, asked from a pod.
	BackendIP, DNSAnswer string
	// APIServerVersion is the gitVersion a pod read from the API server
	// through https://kubernetes.default.svc.
	APIServerVersion string
	// ClusterIPSpread counts requests from a pod to the backend ClusterIP
	// by the backend pod that answered; ScaledSpread after scaling to 5.
	ClusterIPSpread, ScaledSpread map[string]int
	// FromNode is a request from node1 itself to the backend ClusterIP;
	// IPv6 one from the client pod to its IPv6 ClusterIP, once dual-stack.
	FromNode, IPv6 Answer
	// NodePort holds one answer per node through the frontend NodePort,
	// from the client; LoadBalancer and Local answers through the
	// load-balancer IP with externalTrafficPolicy Cluster and Local.
	NodePort, LoadBalancer, Local []Answer
	// HealthChecks are each node's health-check node port answers for the
	// Local Service while one frontend pod runs.
	HealthChecks []HealthCheck
	// LocalNode is the node of that one frontend pod.
	LocalNode string
	// Traces are `svcproxy trace` of the client's connection to the
	// NodePort on another node, then on LocalNode.
	Traces []NodeTrace
	// Rollout is the rolling update of the backend under load.
	Rollout Rollout
	// Rules is what svcproxy programmed on node1 for backend-service.
	Rules string
}

// Answer is one request through the frontend.
type Answer struct {
	Via      string // the node or address asked
	Frontend string // the frontend pod that answered
	Backend  string // the backend pod the frontend reached
	ClientIP string // the source address the frontend saw
	Err      string // the request failed
}

// NodeTrace is a trace on one node.
type NodeTrace struct {
	Node   string
	Result *explain.Result
}

// HealthCheck is one node's healthCheckNodePort answer.
type HealthCheck struct {
	Node           string
	Status         int
	LocalEndpoints int
}

// Rollout counts requests during a rolling update.
type Rollout struct {
	Requests, Failures int
	Versions           map[string]int // backend VERSION -> answers
	FirstFailure       string
	Took               time.Duration
}

// Run brings up a lab, walks through, and takes the lab down unless keep
// (or the walkthrough was interrupted before the lab was up).
func Run(ctx context.Context, opts lab.Options, keep bool, w io.Writer) error {
	st, err := lab.Up(ctx, opts)
	if err != nil {
		return err
	}
	_, err = Walk(ctx, st, w)
	if keep {
		fmt.Fprintf(w, "\nThe lab stays up, and its page at %s: svcproxy lab status, svcproxy lab kubectl get pods -o wide, svcproxy lab down.\n", st.UI)
		return err
	}
	fmt.Fprintf(w, "\n$ svcproxy lab down\n")
	return joinDown(err, lab.Down(context.WithoutCancel(ctx), st.Name))
}

// Walk runs the walkthrough in a lab that is up and empty.
func Walk(ctx context.Context, st *lab.State, w io.Writer) (*Report, error) {
	client, err := st.Client()
	if err != nil {
		return nil, err
	}
	t := &tour{st: st, client: client, w: w, report: &Report{}}
	for _, step := range []func(context.Context) error{
		t.backend, t.dns, t.clusterIP, t.nodePort, t.loadBalancer, t.local, t.scale, t.rollingUpdate, t.rules,
	} {
		if err := step(ctx); err != nil {
			return t.report, err
		}
	}
	return t.report, nil
}

// tour is the walkthrough's state.
type tour struct {
	st     *lab.State
	client kubernetes.Interface
	w      io.Writer
	report *Report
}

func joinDown(err, downErr error) error {
	if err == nil {
		return downErr
	}
	if downErr != nil {
		return fmt.Errorf("%w (and lab down: %v)", err, downErr)
	}
	return err
}
