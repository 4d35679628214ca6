package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"k8s.io/client-go/kubernetes"

	"github.com/svcproxy/svcproxy/internal/proxy/explain"
	"github.com/svcproxy/svcproxy/internal/tools/lab"
	"github.com/svcproxy/svcproxy/internal/tools/lab/kubelet"
	"github.com/svcproxy/svcproxy/internal/tools/lab/lbpool"
	"github.com/svcproxy/svcproxy/internal/tools/lab/ui"
	"github.com/svcproxy/svcproxy/internal/tools/lab/walkthrough"
)

// labCommands are `svcproxy lab ...`, in the order the help lists them.
var labCommands = []*command{
	{
		name: "lab up", synopsis: "[--name lab] [--nodes 3] [--proxy-mode nftables|iptables|ipvs] [--proxy-verbosity 2]",
		about: `Brings up a cluster of network namespaces on this machine: a real control
plane, and on every node the lab's kubelet and svcproxy.`,
		flags: func(fs *flag.FlagSet) func(context.Context, []string, io.Writer, io.Writer) error {
			o := labOptions(fs)
			return func(ctx context.Context, _ []string, stdout, _ io.Writer) error {
				o.Progress = stdout
				_, err := lab.Up(ctx, *o)
				return err
			}
		},
	},
	{
		name: "lab ui", synopsis: "[--name lab]",
		about: `Prints the address of the lab's page: a live picture of the nodes, pods,
Services and traffic.`,
		flags: func(fs *flag.FlagSet) func(context.Context, []string, io.Writer, io.Writer) error {
			name := labName(fs)
			return func(_ context.Context, _ []string, stdout, _ io.Writer) error {
				st, err := lab.Load(*name)
				if err != nil {
					return err
				}
				return labUI(st, stdout)
			}
		},
	},
	{
		name: "lab status", synopsis: "[--name lab] [--node N [--output text|json]]",
		about: `Lists the lab's processes and pods (with their network namespaces), nodes
and Services. With --node, shows that node's svcproxy status instead.`,
		flags: func(fs *flag.FlagSet) func(context.Context, []string, io.Writer, io.Writer) error {
			name := labName(fs)
			node := fs.String("node", "", "the node whose svcproxy to ask")
			var output string
			registerOutput(fs, &output)
			return func(ctx context.Context, _ []string, stdout, _ io.Writer) error {
				st, err := lab.Load(*name)
				if err != nil {
					return err
				}
				if *node == "" {
					return st.Status(ctx, stdout)
				}
				e, err := nodeExplainer(st, *node, output)
				if err != nil {
					return err
				}
				return showStatus(ctx, e, stdout)
			}
		},
	},
	{
		name: "lab trace", synopsis: "[--name lab] --node N --src IP --dst IP:PORT [--proto tcp] [--from-host] [--output text|json]",
		about: `What node N does with such a packet: the rules it meets in the node's
kernel, checked against that node's svcproxy plan (see svcproxy trace).`,
		flags: func(fs *flag.FlagSet) func(context.Context, []string, io.Writer, io.Writer) error {
			name := labName(fs)
			node := fs.String("node", "", "the node to ask")
			var output string
			registerOutput(fs, &output)
			var t traceFlags
			t.register(fs)
			return func(ctx context.Context, _ []string, stdout, _ io.Writer) error {
				st, err := lab.Load(*name)
				if err != nil {
					return err
				}
				e, err := nodeExplainer(st, *node, output)
				if err != nil {
					return err
				}
				return showTrace(ctx, e, t, stdout)
			}
		},
	},
	{
		name: "lab kubectl", synopsis: "[--name=lab] ARGS...",
		about: `Runs kubectl against the lab's API server; every argument after an
optional leading --name=NAME is kubectl's ("svcproxy lab kubectl help" for
kubectl's own help).`,
		flags: labKubectlFlags, positional: true, passThrough: true,
	},
	{
		name: "lab exec", synopsis: "[--name lab] [-n NAMESPACE] POD|NODE|client -- CMD...",
		about: `Runs CMD in a pod's, a node's or the outside client's network namespace.`,
		flags: func(fs *flag.FlagSet) func(context.Context, []string, io.Writer, io.Writer) error {
			name := labName(fs)
			namespace := fs.String("n", "default", "the pod's Kubernetes namespace")
			return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
				st, err := lab.Load(*name)
				if err != nil {
					return err
				}
				return labExec(ctx, st, *namespace, args, stdout, stderr)
			}
		},
		positional: true,
	},
	{
		name: "lab demo", synopsis: "[--name lab] [--nodes 3] [--proxy-mode nftables|iptables|ipvs] [--proxy-verbosity 2] [--keep]",
		about: `Brings a lab up, walks through the seeds' two-tier example
(examples/two-tier/) printing what each step shows, and takes the lab
down again unless --keep.`,
		flags: func(fs *flag.FlagSet) func(context.Context, []string, io.Writer, io.Writer) error {
			o := labOptions(fs)
			keep := fs.Bool("keep", false, "leave the lab up afterwards")
			return func(ctx context.Context, _ []string, stdout, _ io.Writer) error {
				o.Progress = stdout
				return walkthrough.Run(ctx, *o, *keep, stdout)
			}
		},
	},
	{
		name: "lab down", synopsis: "[--name lab]",
		about: `Removes everything the lab made: its processes, namespaces and files, also
after an up that failed or was killed.`,
		flags: func(fs *flag.FlagSet) func(context.Context, []string, io.Writer, io.Writer) error {
			name := labName(fs)
			return func(ctx context.Context, _ []string, _, _ io.Writer) error {
				return lab.Down(context.WithoutCancel(ctx), *name)
			}
		},
	},
	{
		name: "lab kubelet", synopsis: "--name lab --node N", internal: true,
		about: `Internal: the lab's kubelet for node N, started by lab up inside the
node's network namespace.`,
		flags: func(fs *flag.FlagSet) func(context.Context, []string, io.Writer, io.Writer) error {
			name := labName(fs)
			node := fs.String("node", "", "the node to play")
			return func(ctx context.Context, _ []string, _, stderr io.Writer) error {
				st, client, err := labClient(*name)
				if err != nil {
					return err
				}
				return kubelet.Run(ctx, st, *node, client, labLogf(stderr))
			}
		},
	},
	{
		name: "lab ui-server", synopsis: "--name lab", internal: true,
		about: `Internal: the lab's page, served on the listener lab up hands over.`,
		flags: func(fs *flag.FlagSet) func(context.Context, []string, io.Writer, io.Writer) error {
			name := labName(fs)
			return func(ctx context.Context, _ []string, _, stderr io.Writer) error {
				st, err := lab.Load(*name)
				if err != nil {
					return err
				}
				return serveUI(ctx, st, labLogf(stderr))
			}
		},
	},
	{
		name: "lab lbpool", synopsis: "--name lab", internal: true,
		about: `Internal: the lab's load-balancer controller, started by lab up beside the
control plane.`,
		flags: func(fs *flag.FlagSet) func(context.Context, []string, io.Writer, io.Writer) error {
			name := labName(fs)
			return func(ctx context.Context, _ []string, _, stderr io.Writer) error {
				st, client, err := labClient(*name)
				if err != nil {
					return err
				}
				return lbpool.Run(ctx, st, client, labLogf(stderr))
			}
		},
	},
}

// runLab dispatches `svcproxy lab ...`; bare or with --help it prints the
// lab's usage.
func runLab(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, labUsage())
		return nil
	}
	for _, c := range labCommands {
		if c.name == "lab "+args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "svcproxy lab: unknown command %q\n\n%s", args[0], labUsage())
	return errUsage
}

// labUsage lists the lab's commands, the internal ones last.
func labUsage() string {
	var b strings.Builder
	b.WriteString("Usage:\n")
	for _, internal := range []bool{false, true} {
		if internal {
			b.WriteString("\nInternal (lab up starts these; not for people):\n")
		}
		for _, c := range labCommands {
			if c.internal == internal {
				fmt.Fprintf(&b, "  svcproxy %s %s\n", c.name, c.synopsis)
			}
		}
	}
	b.WriteString("\nEvery command takes --help, and --name NAME to pick a lab other than \"lab\".\n")
	return b.String()
}

func labName(fs *flag.FlagSet) *string {
	return fs.String("name", lab.DefaultName, "the lab's name")
}

// labOptions registers the flags of the commands that bring a lab up.
func labOptions(fs *flag.FlagSet) *lab.Options {
	o := &lab.Options{}
	fs.StringVar(&o.Name, "name", lab.DefaultName, "the lab's name")
	fs.IntVar(&o.Nodes, "nodes", 3, "number of nodes")
	fs.StringVar(&o.ProxyMode, "proxy-mode", "nftables", "svcproxy's mode on the nodes: nftables, iptables or ipvs (ipvs needs a kernel with IPVS)")
	fs.IntVar(&o.ProxyVerbosity, "proxy-verbosity", 2, "svcproxy's -v on the nodes: 2 logs a line per sync, 4 also the service ports it changed (logs in /run/svcproxy-lab/NAME/logs/svcproxy-NODE.log)")
	return o
}

// labClient loads a lab and a client of its API server, for the processes
// lab up starts inside the lab's namespaces.
func labClient(name string) (*lab.State, kubernetes.Interface, error) {
	st, err := lab.Load(name)
	if err != nil {
		return nil, nil, err
	}
	client, err := st.ClientIn("")
	return st, client, err
}

func labLogf(w io.Writer) func(string, ...any) {
	return log.New(w, "", log.LstdFlags|log.Lmicroseconds).Printf
}

// labUI prints the address of the lab's page.
func labUI(st *lab.State, stdout io.Writer) error {
	if st.UI == "" {
		return fmt.Errorf("lab %s has no page (brought up by an older svcproxy?)", st.Name)
	}
	procs, err := st.Processes()
	if err != nil {
		return err
	}
	for _, p := range procs {
		if p.Name == "ui" && !p.Running {
			return fmt.Errorf("the page's server (lab process ui) has exited: see %s", filepath.Join(st.Dir, "logs", "ui.log"))
		}
	}
	fmt.Fprintln(stdout, st.UI)
	return nil
}

// serveUI serves the page on the listener `lab up` handed over; it runs
// in the machine's namespace and reaches the API server from the control
// plane's.
func serveUI(ctx context.Context, st *lab.State, logf func(string, ...any)) error {
	l, err := lab.UIListener()
	if err != nil {
		return err
	}
	client, err := st.Client()
	if err != nil {
		return err
	}
	nodes := ui.NewLabNodes(st)
	defer nodes.Close()
	return ui.New(ui.Options{Lab: st, Client: client, Nodes: nodes, Logf: logf}).Run(ctx, l)
}

// nodeExplainer asks a lab node's svcproxy, inside the node's namespace.
func nodeExplainer(st *lab.State, node, output string) (explainFlags, error) {
	n, ok := st.Node(node)
	if !ok {
		return explainFlags{}, fmt.Errorf("--node %q is not a node of lab %s", node, st.Name)
	}
	return explainFlags{node: explain.Node{Netns: n.Netns, Metrics: "127.0.0.1:10249"}, output: output}, nil
}

// labKubectlFlags runs kubectl with every argument after a leading
// --name=NAME.
func labKubectlFlags(fs *flag.FlagSet) func(context.Context, []string, io.Writer, io.Writer) error {
	name := labName(fs)
	return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		st, err := lab.Load(*name)
		if err != nil {
			return err
		}
		return interactive(st.Kubectl(ctx, args...), stdout, stderr)
	}
}

// labExec runs `exec TARGET -- CMD...`.
func labExec(ctx context.Context, st *lab.State, namespace string, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) < 2 {
		return errors.New("want POD|NODE|client -- CMD...")
	}
	target, argv := args[0], args[1:]
	if argv[0] == "--" {
		argv = argv[1:]
	}
	netns, err := st.Target(ctx, namespace, target)
	if err != nil {
		return err
	}
	return interactive(lab.Command(ctx, netns, argv...), stdout, stderr)
}

// interactive runs cmd with our stdin and the given outputs. A non-zero
// exit becomes an ExitError, so that svcproxy exits with the same status
// without adding a message to the command's own.
func interactive(cmd *exec.Cmd, stdout, stderr io.Writer) error {
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return ExitError(exit.ExitCode())
	}
	return err
}

// ExitError is an exit status to pass on without a message.
type ExitError int

func (e ExitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }
