// Package cli is svcproxy's command line: it parses arguments and hands
// each subcommand to the package that does the work.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/svcproxy/svcproxy/internal/tools/bench"
	"github.com/svcproxy/svcproxy/internal/version"
)

const usage = `svcproxy: a Kubernetes Service proxy.

Usage:
  svcproxy [kube-proxy flags]   run as this node's Service proxy (a drop-in
                                kube-proxy: same flags, same --config file)
  svcproxy --manifests DIR      run as a node-local load balancer fed by a
                                directory of Service and EndpointSlice YAML
  svcproxy lab up|ui|status|trace|kubectl|exec|demo|down
                                a whole Kubernetes cluster of network
                                namespaces on this machine, svcproxy on every
                                node (svcproxy lab help); with no arguments
                                svcproxy runs "lab demo": up, the two-tier
                                walkthrough, down
  svcproxy demo                 a quick look without a control plane: the
                                two-tier example programmed from manifests
                                into throwaway network namespaces
  svcproxy status [--output json]
                                this node's Services as the running svcproxy
                                planned them: addresses, policies, endpoints
                                (ready, serving, terminating, local, zone) and
                                which traffic uses them; the last sync
  svcproxy trace --src IP --dst IP:PORT [--proto tcp] [--output json]
                                what this node does with such a packet: the
                                rules it meets in the kernel, the candidate
                                endpoints and their odds, masquerading, the
                                verdict and why, checked against the plan
  svcproxy bench [flags]        measure a dataplane in a throwaway network
                                namespace and print a table; with --api, the
                                network programming latency against a real
                                kube-apiserver
  svcproxy version              the version, commit and compatible kube-proxy
                                release (also --version)
  svcproxy help                 this text
`

// Main runs svcproxy with args and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if len(args) == 0 {
		args = []string{"lab", "demo"}
	}
	var err error
	switch args[0] {
	case "bench":
		err = runBench(ctx, args[1:], stdout, stderr)
	case "demo":
		err = runDemo(ctx, args[1:], stdout, stderr)
	case "lab":
		err = runLab(ctx, args[1:], stdout, stderr)
	case "status":
		err = runStatus(ctx, args[1:], stdout, stderr)
	case "trace":
		err = runTrace(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		printHelp(stdout)
		return 0
	case "version":
		version.Get().Print(stdout)
		return 0
	default:
		if strings.HasPrefix(args[0], "-") {
			err = runProxy(ctx, args, stdout, stderr)
			break
		}
		fmt.Fprintf(stderr, "svcproxy: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	var exit ExitError
	if errors.As(err, &exit) {
		return int(exit)
	}
	if err != nil && strings.HasPrefix(args[0], "-") {
		fmt.Fprintf(stderr, "svcproxy: %v\n", err)
		return 1
	}
	if err != nil {
		fmt.Fprintf(stderr, "svcproxy %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sizes := fs.String("services", "1000,10000", "comma-separated numbers of Services")
	eps := fs.Int("endpoints", 10, "endpoints per Service")
	changes := fs.Int("changes", 50, "single-endpoint changes timed per size")
	dp := fs.String("dataplane", "nftables", "dataplane to measure")
	api := fs.Bool("api", false, "measure network programming latency against a real kube-apiserver instead")
	minSyncs := fs.String("min-sync-periods", "0s,1s", "with --api: the minSyncPeriods to measure")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var ns []int
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("--services: bad number %q", s)
		}
		ns = append(ns, n)
	}
	if *api {
		var periods []time.Duration
		for _, s := range strings.Split(*minSyncs, ",") {
			d, err := time.ParseDuration(strings.TrimSpace(s))
			if err != nil {
				return fmt.Errorf("--min-sync-periods: %w", err)
			}
			periods = append(periods, d)
		}
		return bench.RunAPI(ctx, stdout, bench.APIOptions{Services: ns[len(ns)-1], Endpoints: *eps, Changes: *changes, MinSyncPeriods: periods})
	}
	return bench.Run(ctx, stdout, bench.Options{Sizes: ns, Endpoints: *eps, Changes: *changes, Dataplane: *dp})
}
