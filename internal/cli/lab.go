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

	"github.com/svcproxy/svcproxy/internal/proxy/explain"
	"github.com/svcproxy/svcproxy/internal/tools/lab"
	"github.com/svcproxy/svcproxy/internal/tools/lab/kubelet"
	"github.com/svcproxy/svcproxy/internal/tools/lab/lbpool"
	"github.com/svcproxy/svcproxy/internal/tools/lab/ui"
	"github.com/svcproxy/svcproxy/internal/tools/lab/walkthrough"
)

const labUsage = `Usage:
  svcproxy lab up [--nodes 3] [--proxy-mode nftables|iptables]
                                  bring up a cluster of network namespaces:
                                  real control plane, svcproxy on every node
  svcproxy lab ui                 the address of the lab's page: a live picture
                                  of the nodes, pods, Services and traffic
  svcproxy lab status [--node N]  processes, nodes, pods and Services; with
                                  --node, that node's svcproxy status
  svcproxy lab trace --node N --src IP --dst IP:PORT [--proto tcp]
                                  what node N does with such a packet
  svcproxy lab kubectl ARGS...    kubectl pointed at the lab
  svcproxy lab exec [-n NAMESPACE] POD|NODE|client -- CMD...
                                  run CMD in a pod's, a node's or the outside
                                  client's network namespace
  svcproxy lab demo [--keep]      up, the two-tier walkthrough, down
  svcproxy lab down               remove everything the lab made
Every command takes --name NAME to pick a lab other than "lab".
`

// runLab dispatches `svcproxy lab ...`.
func runLab(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, labUsage)
		return errors.New("lab: which command?")
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "help", "-h", "--help":
		fmt.Fprint(stdout, labUsage)
		return nil
	case "kubectl":
		return labKubectl(ctx, args, stdout, stderr)
	}
	fs := flag.NewFlagSet("lab "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, labUsage) }
	name := fs.String("name", lab.DefaultName, "the lab's name")
	nodes := fs.Int("nodes", 3, "up, demo: number of nodes")
	mode := fs.String("proxy-mode", "nftables", "up, demo: svcproxy's mode on the nodes")
	keep := fs.Bool("keep", false, "demo: leave the lab up afterwards")
	namespace := fs.String("n", "default", "exec: the pod's Kubernetes namespace")
	node := fs.String("node", "", "status, trace: the node to ask; kubelet: the node to play")
	output := fs.String("output", "text", "status --node, trace: text or json")
	var packet traceFlags
	packet.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	opts := lab.Options{Name: *name, Nodes: *nodes, ProxyMode: *mode, Progress: stdout}
	switch cmd {
	case "up":
		_, err := lab.Up(ctx, opts)
		return err
	case "down":
		return lab.Down(context.WithoutCancel(ctx), *name)
	case "demo":
		return walkthrough.Run(ctx, opts, *keep, stdout)
	case "status", "exec", "kubelet", "lbpool", "trace", "ui", "ui-server":
		st, err := lab.Load(*name)
		if err != nil {
			return err
		}
		if cmd == "trace" || cmd == "status" && *node != "" {
			return explainNode(ctx, st, cmd, *node, *output, packet, stdout)
		}
		return runInLab(ctx, st, cmd, fs.Args(), *namespace, *node, stdout, stderr)
	}
	fmt.Fprint(stderr, labUsage)
	return fmt.Errorf("unknown lab command %q", cmd)
}

// runInLab runs the commands that need a lab that is up.
func runInLab(ctx context.Context, st *lab.State, cmd string, args []string, namespace, node string, stdout, stderr io.Writer) error {
	switch cmd {
	case "status":
		return st.Status(ctx, stdout)
	case "exec":
		return labExec(ctx, st, namespace, args, stdout, stderr)
	case "ui":
		return labUI(st, stdout)
	}
	logf := log.New(stderr, "", log.LstdFlags|log.Lmicroseconds).Printf
	if cmd == "ui-server" {
		return serveUI(ctx, st, logf)
	}
	client, err := st.ClientIn("") // `lab up` starts both inside their namespaces
	if err != nil {
		return err
	}
	if cmd == "kubelet" {
		return kubelet.Run(ctx, st, node, client, logf)
	}
	return lbpool.Run(ctx, st, client, logf)
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

// explainNode runs `status` or `trace` against a lab node's svcproxy.
func explainNode(ctx context.Context, st *lab.State, cmd, node, output string, packet traceFlags, stdout io.Writer) error {
	n, ok := st.Node(node)
	if !ok {
		return fmt.Errorf("%s: --node %q is not a node of lab %s", cmd, node, st.Name)
	}
	e := explainFlags{node: explain.Node{Netns: n.Netns, Metrics: "127.0.0.1:10249"}, output: output}
	if cmd == "status" {
		return showStatus(ctx, e, stdout)
	}
	return showTrace(ctx, e, packet, stdout)
}

// labExec runs `exec TARGET -- CMD...`.
func labExec(ctx context.Context, st *lab.State, namespace string, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) < 2 {
		return errors.New("exec: want POD|NODE|client -- CMD...")
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

// labKubectl runs kubectl against the lab; a leading --name=NAME picks
// the lab.
func labKubectl(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	name := lab.DefaultName
	if len(args) > 0 && strings.HasPrefix(args[0], "--name=") {
		name, args = strings.TrimPrefix(args[0], "--name="), args[1:]
	}
	st, err := lab.Load(name)
	if err != nil {
		return err
	}
	return interactive(st.Kubectl(ctx, args...), stdout, stderr)
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
