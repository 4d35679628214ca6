// Package manifests is the standalone source: it watches a directory of
// Kubernetes YAML (or JSON) manifests — v1 Services and discovery.k8s.io/v1
// EndpointSlices — and feeds them to a source.Sink. With it svcproxy is a
// node-local L4 load balancer configured with plain Kubernetes objects and
// no API server: write a Service and its EndpointSlices to a file, and the
// dataplane follows.
//
// The directory is polled (not recursive). Files ending .yaml, .yml or .json
// are read; hidden files (a leading dot, which also covers Kubernetes
// ConfigMap volumes' ..data directory and editors' .swp files) and editor
// backups (a trailing ~, #name#) are skipped. Symbolic links are followed.
// A file may hold several documents separated by "---" lines, and a v1 List
// of Services and EndpointSlices.
//
// Documents are decoded strictly, as the API server decodes them
// (sigs.k8s.io/json): an unknown or repeated field is an error, so a typo is
// caught rather than silently ignored. Objects are then held to the plan's
// validator (plan.ValidateService and plan.ValidateEndpointSlice: the API's
// rules for names, ports, protocols and addresses, and the
// kubernetes.io/service-name label on slices); an object defined twice is an
// error. Every error names the file, the document, the object and the field. A file that fails is logged once per distinct
// content and its last good objects stay in force, so a bad edit never
// changes the dataplane; once fixed, its new objects apply. A removed file's
// objects are deleted.
//
// Objects are not defaulted, beyond metadata.namespace (default "default"):
// nothing allocates cluster IPs or node ports, so the manifests must carry
// them. As with kube-proxy, Services and EndpointSlices labelled
// service.kubernetes.io/service-proxy-name or service.kubernetes.io/headless
// are ignored.
//
// The source never calls Sink.SetNode: standalone mode has no Node object,
// and the agent works without one.
package manifests

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"

	"github.com/svcproxy/svcproxy/internal/proxy/source"
)

// Options configure the source.
type Options struct {
	// Dir is the directory of manifests.
	Dir string
	// Interval is the poll period; 0 means one second.
	Interval time.Duration
	// Log reports files that are not applied, and their recovery; the zero
	// Logger means klog's.
	Log logr.Logger
}

// Run scans Dir, delivers its objects to sink, reports Synced once after the
// first scan, then rescans every Interval and delivers the changes until ctx
// ends, when it returns nil. It fails only when Dir is not a directory at
// the start.
func Run(ctx context.Context, opts Options, sink source.Sink) error {
	if fi, err := os.Stat(opts.Dir); err != nil {
		return fmt.Errorf("manifests: %w", err)
	} else if !fi.IsDir() {
		return fmt.Errorf("manifests: %s is not a directory", opts.Dir)
	}
	if opts.Interval <= 0 {
		opts.Interval = time.Second
	}
	if opts.Log.GetSink() == nil {
		opts.Log = klog.Background()
	}
	w := newWatcher(opts.Dir, opts.Log, sink)
	w.scan()
	sink.Synced()
	t := time.NewTicker(opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			w.scan()
		}
	}
}
