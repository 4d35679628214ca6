package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/svcproxy/svcproxy/internal/proxy/explain"
)

var statusCommand = &command{
	name:     "status",
	synopsis: "[--metrics ADDR] [--netns NAME] [--output text|json]",
	about: `Lists every Service port as the running svcproxy planned it: addresses,
traffic policies, endpoints (ready, serving, terminating, local, zone) and
which traffic uses them, and the last sync. Asks the agent through its
metrics server; on an IPVS node, also lists each port's virtual servers
and real servers (weight 0: draining) as the kernel holds them, read
over netlink.`,
	flags: func(fs *flag.FlagSet) func(context.Context, []string, io.Writer, io.Writer) error {
		var e explainFlags
		e.register(fs)
		return func(ctx context.Context, _ []string, stdout, _ io.Writer) error {
			return showStatus(ctx, e, stdout)
		}
	},
}

var traceCommand = &command{
	name:     "trace",
	synopsis: "--src IP --dst IP:PORT [--proto tcp] [--from-host] [--metrics ADDR] [--netns NAME] [--output text|json]",
	about: `Follows one packet through the rules in this node's kernel (read back with
nft or iptables-save; on an IPVS node iptables-save and the virtual
servers, addresses and ipsets over netlink), names each rule it meets, and checks the result
against the running svcproxy's plan. A disagreement is printed as an ERROR
and the command exits 3.`,
	flags: func(fs *flag.FlagSet) func(context.Context, []string, io.Writer, io.Writer) error {
		var e explainFlags
		e.register(fs)
		var t traceFlags
		t.register(fs)
		return func(ctx context.Context, _ []string, stdout, _ io.Writer) error {
			return showTrace(ctx, e, t, stdout)
		}
	},
}

// explainFlags are the flags `status` and `trace` share.
type explainFlags struct {
	node   explain.Node
	output string
}

func (e *explainFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&e.node.Metrics, "metrics", "127.0.0.1:10249", "the running svcproxy's metrics server (metricsBindAddress)")
	fs.StringVar(&e.node.Netns, "netns", "", "the node is this named network namespace (svcproxy --netns)")
	registerOutput(fs, &e.output)
}

func registerOutput(fs *flag.FlagSet, output *string) {
	fs.StringVar(output, "output", "text", "text or json")
}

func showStatus(ctx context.Context, e explainFlags, stdout io.Writer) error {
	s, err := e.node.Status(ctx)
	if err != nil {
		return err
	}
	return e.print(stdout, s, s.Write)
}

// traceFlags describe the packet.
type traceFlags struct {
	src, dst, proto string
	fromHost        bool
}

func (t *traceFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&t.src, "src", "", "source IP[:PORT] of the packet")
	fs.StringVar(&t.dst, "dst", "", "destination IP:PORT of the packet")
	fs.StringVar(&t.proto, "proto", "tcp", "tcp, udp or sctp")
	fs.BoolVar(&t.fromHost, "from-host", false, "the packet starts on the node itself")
}

func showTrace(ctx context.Context, e explainFlags, t traceFlags, stdout io.Writer) error {
	pkt, err := explain.ParsePacket(t.src, t.dst, t.proto)
	if err != nil {
		return err
	}
	pkt.FromHost = t.fromHost
	r, err := e.node.Trace(ctx, pkt)
	if err != nil {
		return err
	}
	if err := e.print(stdout, r, r.Write); err != nil {
		return err
	}
	if len(r.Problems) > 0 {
		return ExitError(3) // the rules disagree with the plan (printed above)
	}
	return nil
}

// print writes v as JSON, or with write as text.
func (e explainFlags) print(w io.Writer, v any, write func(io.Writer)) error {
	switch e.output {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return enc.Encode(v)
	case "text":
		write(w)
		return nil
	}
	return fmt.Errorf("--output %q: want text or json", e.output)
}
