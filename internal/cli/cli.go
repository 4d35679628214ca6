// Package cli is svcproxy's command line: it parses arguments and hands
// each subcommand to the package that does the work. Run bare or with
// kube-proxy's flags, svcproxy is kube-proxy; every subcommand (lab ...,
// status, trace, bench) has a flag set of its own and a --help.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"strings"
	"syscall"

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
                                node (svcproxy lab --help); "svcproxy lab
                                demo" runs up, the seeds' two-tier
                                walkthrough, then down
  svcproxy status               this node's Services as the running svcproxy
                                planned them: addresses, policies, endpoints
                                (ready, serving, terminating, local, zone) and
                                which traffic uses them; the last sync
  svcproxy trace --src IP --dst IP:PORT
                                what this node does with such a packet: the
                                rules it meets in the kernel, the candidate
                                endpoints and their odds, masquerading, the
                                verdict and why, checked against the plan
  svcproxy bench                measure a dataplane in a throwaway network
                                namespace and print a table; with --api, the
                                network programming latency against a real
                                kube-apiserver
  svcproxy version              the version, commit and compatible kube-proxy
                                release (also --version)
  svcproxy help                 this text

Every subcommand takes --help.
`

// Main runs svcproxy with args and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if len(args) == 0 {
		printHelp(stdout)
		return 0
	}
	var err error
	switch name := args[0]; {
	case name == "help" || name == "-h" || name == "--help":
		printHelp(stdout)
		return 0
	case strings.HasPrefix(name, "-"):
		err = runProxy(ctx, args, stdout, stderr)
	case name == "lab":
		err = runLab(ctx, args[1:], stdout, stderr)
	default:
		cmd, ok := topCommands[name]
		if !ok {
			fmt.Fprintf(stderr, "svcproxy: unknown command %q\n\n%s", name, usage)
			return 2
		}
		err = cmd.run(ctx, args[1:], stdout, stderr)
	}
	return exitCode(err, args[0], stderr)
}

// exitCode turns a command's error into svcproxy's exit status, printing
// the error unless it carries its own status.
func exitCode(err error, what string, stderr io.Writer) int {
	var exit ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return int(exit)
	case errors.Is(err, errUsage):
		return 2 // the flag package's message and a hint are printed
	case strings.HasPrefix(what, "-"):
		fmt.Fprintf(stderr, "svcproxy: %v\n", err)
	default:
		fmt.Fprintf(stderr, "svcproxy %s: %v\n", what, err)
	}
	return 1
}

// command is one subcommand: its flags, what it says in --help, and what
// it runs once its flags are parsed.
type command struct {
	name     string // as typed: "status", "lab up"
	synopsis string // after the name in the usage line
	about    string // one paragraph for --help
	// flags registers the command's flags and returns the function that
	// runs it with the arguments left after them.
	flags func(fs *flag.FlagSet) func(ctx context.Context, args []string, stdout, stderr io.Writer) error
	// positional says the command takes arguments after its flags.
	positional bool
	// passThrough says only leading --help and --name=NAME are ours: every
	// other argument, flags included, belongs to the program it runs.
	passThrough bool
	// internal commands are started by the lab, not typed by people.
	internal bool
}

// errUsage is a command line the flag package refused and explained.
var errUsage = errors.New("usage error")

// run parses args with the command's own flag set: --help prints its usage
// to stdout; an unknown flag or a stray argument is refused, naming it.
func (c *command) run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("svcproxy "+c.name, flag.ContinueOnError)
	runner := c.flags(fs)
	fs.SetOutput(stderr)
	fs.Usage = func() {}
	rest := []string(nil)
	if c.passThrough {
		args, rest = splitOwnArgs(args)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.usage(fs, stdout)
			return nil
		}
		fmt.Fprintf(stderr, "svcproxy %s: %v (see svcproxy %s --help)\n", c.name, err, c.name)
		return errUsage
	}
	if !c.positional && fs.NArg() > 0 {
		fmt.Fprintf(stderr, "svcproxy %s: unexpected argument %q (see svcproxy %s --help)\n", c.name, fs.Arg(0), c.name)
		return errUsage
	}
	return runner(ctx, append(fs.Args(), rest...), stdout, stderr)
}

// splitOwnArgs splits a pass-through command's leading --help and
// --name=NAME from the arguments it passes on.
func splitOwnArgs(args []string) (own, rest []string) {
	n := 0
	for n < len(args) && (args[n] == "-h" || args[n] == "--help" || strings.HasPrefix(args[n], "--name=")) {
		n++
	}
	return args[:n], args[n:]
}

// usage prints the command's help.
func (c *command) usage(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprintf(w, "Usage: svcproxy %s %s\n\n%s\n", c.name, c.synopsis, c.about)
	has := false
	fs.VisitAll(func(*flag.Flag) { has = true })
	if has {
		fmt.Fprint(w, "\nFlags:\n")
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
}

// topCommands are the subcommands besides lab and the proxy itself.
var topCommands = map[string]*command{
	"status":  statusCommand,
	"trace":   traceCommand,
	"bench":   benchCommand,
	"version": versionCommand,
}

var versionCommand = &command{
	name: "version", synopsis: "",
	about: "Prints svcproxy's version and commit, the kube-proxy release whose flags it takes,\nand the Go toolchain it was built with (as --version does).",
	flags: func(*flag.FlagSet) func(context.Context, []string, io.Writer, io.Writer) error {
		return func(_ context.Context, _ []string, stdout, _ io.Writer) error {
			version.Get().Print(stdout)
			return nil
		}
	},
}
