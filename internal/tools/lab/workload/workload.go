// Package workload holds the programs the lab's kubelet runs in place of
// container images: the jobs API of the two-tier demo (backend and
// frontend), and the real CoreDNS executable for the cluster DNS image.
//
// A lab pod is a network namespace. A built-in program is goroutines of the
// kubelet whose sockets live in that namespace, so it never touches the
// network directly: it opens and dials sockets only through its Env, which
// the kubelet builds for each container. An executable runs as a process
// inside the namespace, through Env.Exec.
package workload

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Program is the code of a container image. It opens its sockets, calls
// ready (if not nil) once it accepts traffic, and serves until ctx is
// cancelled. Then it stops accepting, lets in-flight requests finish for at
// most ShutdownTimeout, closes its sockets and returns nil. An error opening
// a socket is returned at once, naming the port.
type Program func(ctx context.Context, env Env, ready func()) error

// Env is what a container sees of its pod.
type Env struct {
	// Pod and Namespace name the pod.
	Pod, Namespace string
	// PodIP is the pod's (first) address. Programs do not bind to it: see
	// Bind.
	PodIP netip.Addr
	// Bind is the address the servers listen on. The zero value means all
	// addresses, IPv4 and IPv6, as a container listening on ":port" does;
	// this is what the kubelet wants, since a dual-stack pod has two
	// addresses and PodIP is only one of them. Tests set loopback addresses.
	Bind netip.Addr
	// Ports are the container's declared ports.
	Ports []ContainerPort
	// Vars is the container's environment.
	Vars map[string]string
	// Args are the container's arguments; may be empty.
	Args []string

	// Listen and ListenPacket open sockets inside the pod's network
	// namespace; nil means in the caller's namespace (tests).
	Listen       func(network, address string) (net.Listener, error)
	ListenPacket func(network, address string) (net.PacketConn, error)
	// Dial connects from inside the pod's network namespace; nil means
	// from the caller's namespace (tests).
	Dial func(ctx context.Context, network, address string) (net.Conn, error)

	// DNSServer is the cluster DNS address, as "10.96.0.10:53".
	DNSServer string
	// ClusterDomain is the cluster's DNS domain; "" means "cluster.local".
	ClusterDomain string
	// Exec runs the executable bin with args inside the pod's namespace,
	// calls started once it runs, and returns when it exits (with why) or
	// when ctx ends and it has been stopped (nil). Only Command uses it.
	Exec func(ctx context.Context, bin string, args []string, started func()) error

	// Terminating reports whether the pod is terminating; nil means never.
	// While it is, HTTP servers answer with "Connection: close" so clients
	// stop reusing connections to a pod that is going away.
	Terminating func() bool
	// Logf writes a line to the container's log; nil discards it.
	Logf func(format string, args ...any)
}

// ContainerPort is a port a container declares.
type ContainerPort struct {
	Name string
	Port int32
	// Protocol is "TCP" or "UDP"; "" means "TCP", as in a Pod spec.
	Protocol string
}

// Images returns the picker of a program for an image reference. A
// repository ending in "jobs-api" (ghcr.io/learnk8s/jobs-api:v2) runs
// JobsAPI; one ending in "coredns" (registry.k8s.io/coredns/coredns:v1.14.7)
// runs the CoreDNS executable coreDNS. For any other reference known is
// false and run is JobsAPI, which the caller may run after warning that
// the image is not known.
func Images(coreDNS string) func(ref string) (run Program, known bool) {
	return func(ref string) (Program, bool) {
		repo := strings.ToLower(repository(ref))
		switch {
		case strings.HasSuffix(repo, "jobs-api"):
			return JobsAPI, true
		case strings.HasSuffix(repo, "coredns"):
			return Command(coreDNS), true
		}
		return JobsAPI, false
	}
}

// repository strips the digest and the tag from an image reference. A colon
// before the last slash belongs to the registry's port, not to a tag.
func repository(ref string) string {
	ref, _, _ = strings.Cut(ref, "@")
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		ref = ref[:i]
	}
	return ref
}

// withDefaults fills the fields that tests may leave nil.
func (env Env) withDefaults() Env {
	if env.Listen == nil {
		env.Listen = net.Listen
	}
	if env.ListenPacket == nil {
		env.ListenPacket = net.ListenPacket
	}
	if env.Dial == nil {
		var d net.Dialer
		env.Dial = d.DialContext
	}
	if env.ClusterDomain == "" {
		env.ClusterDomain = "cluster.local"
	}
	if env.Terminating == nil {
		env.Terminating = func() bool { return false }
	}
	if env.Logf == nil {
		env.Logf = func(string, ...any) {}
	}
	return env
}

// address is where to listen on port: Bind, or all addresses.
func (env Env) address(port int32) string {
	host := ""
	if env.Bind.IsValid() {
		host = env.Bind.String()
	}
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}

// Command is the program of an image the lab runs as a real executable:
// bin with the container's arguments, inside the pod's namespace, through
// Env.Exec.
func Command(bin string) Program {
	return func(ctx context.Context, env Env, ready func()) error {
		if env.Exec == nil {
			return fmt.Errorf("%s: this environment cannot run executables", bin)
		}
		if ready == nil {
			ready = func() {}
		}
		return env.Exec(ctx, bin, env.Args, ready)
	}
}
