package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"github.com/go-logr/logr"
	clientfeatures "k8s.io/client-go/features"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/klog/v2"

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
	case opts.WriteConfigTo != "":
		return config.WriteFile(opts.WriteConfigTo, opts.Config)
	}
	log, err := startLogging(opts, stdout, stderr)
	if err != nil {
		return err
	}
	clientfeatures.ReplaceFeatureGates(config.ClientGoGates(opts.Gates))
	defer klog.Flush()
	env := proxy.Env{Log: log}
	if opts.Netns != "" {
		env = proxy.InNetns(opts.Netns, log)
	}
	switch {
	case opts.Cleanup:
		return proxy.Cleanup(ctx, opts, env)
	case opts.InitOnly:
		return proxy.Init(opts, env)
	}
	tuneGC(log)
	return proxy.Run(ctx, opts, env)
}

// startLogging applies the logging configuration (-v, --vmodule,
// --logging-format, ...) through component-base, so that client-go's lines
// and svcproxy's share one stream and format, and says what kube-proxy
// says at start, and what svcproxy's configuration means here.
func startLogging(opts *config.Options, stdout, stderr io.Writer) (logr.Logger, error) {
	streams := &logsapi.LoggingOptions{ErrorStream: stderr, InfoStream: stdout}
	if err := logsapi.ValidateAndApplyWithOptions(&opts.Config.Logging, streams, opts.Gates); err != nil {
		return logr.Logger{}, fmt.Errorf("logging: %w", err)
	}
	log := klog.Background()
	v := version.Get()
	node, _ := config.NodeName(opts.Config)
	log.Info("Starting svcproxy", "version", v.Version, "commit", v.Commit, "kubeProxyCompatible", version.KubeProxy, "mode", opts.Proxy.Mode, "node", node)
	for _, f := range opts.Flags {
		log.V(1).Info("Flag", "name", "--"+f.Name, "value", f.Value)
	}
	for _, note := range config.StartNotes(opts) {
		log.Info("Warning: " + note)
	}
	return log, nil
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

func tuneGC(log logr.Logger) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
		log.Info("Garbage collector target set (set GOGC to override; GOMEMLIMIT caps the heap)", "GOGC", gcPercent)
	}
}
