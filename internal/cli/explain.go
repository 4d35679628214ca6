package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/svcproxy/svcproxy/internal/proxy/explain"
)

// explainFlags are the flags `status` and `trace` share.
type explainFlags struct {
	node   explain.Node
	output string
}

func (e *explainFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&e.node.Metrics, "metrics", "127.0.0.1:10249", "the running svcproxy's metrics server (metricsBindAddress)")
	fs.StringVar(&e.node.Netns, "netns", "", "the node is this named network namespace (svcproxy --netns)")
	fs.StringVar(&e.output, "output", "text", "text or json")
}

// runStatus runs `svcproxy status`.
func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var e explainFlags
	e.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	return showStatus(ctx, e, stdout)
}

func showStatus(ctx context.Context, e explainFlags, stdout io.Writer) error {
	s, err := e.node.Status(ctx)
	if err != nil {
		return err
	}
	return e.print(stdout, s, s.Write)
}

// runTrace runs `svcproxy trace`.
func runTrace(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("trace", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var e explainFlags
	e.register(fs)
	t := traceFlags{}
	t.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	return showTrace(ctx, e, t, stdout)
}

// traceFlags describe the packet.
type traceFlags struct {
	src, dst, proto *string
	fromHost        *bool
}

func (t *traceFlags) register(fs *flag.FlagSet) {
	t.src = fs.String("src", "", "source IP[:PORT] of the packet")
	t.dst = fs.String("dst", "", "destination IP:PORT of the packet")
	t.proto = fs.String("proto", "tcp", "tcp, udp or sctp")
	t.fromHost = fs.Bool("from-host", false, "the packet starts on the node itself")
}

func showTrace(ctx context.Context, e explainFlags, t traceFlags, stdout io.Writer) error {
	pkt, err := explain.ParsePacket(*t.src, *t.dst, *t.proto)
	if err != nil {
		return err
	}
	pkt.FromHost = *t.fromHost
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
