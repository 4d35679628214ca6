package cli

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"runtime/debug"

	"github.com/svcproxy/svcproxy/internal/proxy"
	"github.com/svcproxy/svcproxy/internal/proxy/config"
	"github.com/svcproxy/svcproxy/internal/version"
)

// runProxy runs svcproxy as kube-proxy: args are kube-proxy's flags.
func runProxy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opts, err := config.Parse(args)
	if err != nil {
		return err
	}
	switch {
	case opts.Help:
		printHelp(stdout)
		return nil
	case opts.Version:
		version.Get().Print(stdout)
		return nil
	}
	logf := log.New(stderr, "", log.LstdFlags|log.Lmicroseconds).Printf
	for _, w := range opts.Warnings {
		logf("warning: %s", w)
	}
	env := proxy.Env{Logf: logf}
	if opts.Netns != "" {
		env = proxy.InNetns(opts.Netns, logf)
	}
	switch {
	case opts.WriteConfigTo != "":
		return config.WriteFile(opts.WriteConfigTo, opts.Config)
	case opts.Cleanup:
		return proxy.Cleanup(ctx, opts, env)
	case opts.InitOnly:
		return proxy.Init(opts, env)
	}
	tuneGC(logf)
	v := version.Get()
	logf("svcproxy %s (commit %s) starting: mode %s, node %q", v.Version, v.Commit, opts.Proxy.Mode, opts.Config.HostnameOverride)
	return proxy.Run(ctx, opts, env)
}

// printHelp writes the subcommands, then kube-proxy's flags.
func printHelp(w io.Writer) {
	fmt.Fprint(w, usage)
	fmt.Fprintf(w, "\nRun as a node's Service proxy (kube-proxy %s's flags and config file):\n\n", version.KubeProxy)
	config.Usage(w)
}

// gcPercent is the garbage collector's target when GOGC is not set: a node
// agent's memory counts more than the little CPU the extra collections
// cost, since after the first sync it allocates little. At 10,000 Services
// it keeps the heap's peak near 1.5x the live objects instead of 2x.
const gcPercent = 50

func tuneGC(logf func(string, ...any)) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
		logf("garbage collector target GOGC=%d (set GOGC to override; GOMEMLIMIT caps the heap)", gcPercent)
	}
}
