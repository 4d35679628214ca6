// Package kube is the Kubernetes source: client-go informers on Services,
// EndpointSlices and this node's Node, feeding a source.Sink.
//
// As kube-proxy does, Services and EndpointSlices that carry the
// service.kubernetes.io/service-proxy-name label (another proxy's) or the
// service.kubernetes.io/headless label are never listed, and the sink hears
// Synced only once both have been listed in full.
package kube

import (
	"context"
	"fmt"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	configv1alpha1 "k8s.io/component-base/config/v1alpha1"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
	"github.com/svcproxy/svcproxy/internal/proxy/source"
)

// Options configure the source.
type Options struct {
	Client   kubernetes.Interface
	NodeName string
	// Resync is the informers' resync period (kube-proxy's configSyncPeriod).
	Resync time.Duration
}

// Run starts the informers, reports Synced once Services and EndpointSlices
// are listed, and feeds the sink until ctx ends.
func Run(ctx context.Context, opts Options, sink source.Sink) error {
	// The caches keep only what the proxy reads (see slim).
	strip := informers.WithTransform(slim)
	objects := informers.NewSharedInformerFactoryWithOptions(opts.Client, opts.Resync, strip,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = selector().String() }))
	node := informers.NewSharedInformerFactoryWithOptions(opts.Client, opts.Resync, strip,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", opts.NodeName).String()
		}))

	services := objects.Core().V1().Services().Informer()
	slices := objects.Discovery().V1().EndpointSlices().Informer()
	nodes := node.Core().V1().Nodes().Informer()
	// Synced waits for the handlers' registrations, not the informers: an
	// informer is synced once its cache holds the list, but its handlers
	// may still be receiving it.
	var synced []cache.InformerSynced
	for _, reg := range []func() (cache.ResourceEventHandlerRegistration, error){
		func() (cache.ResourceEventHandlerRegistration, error) {
			return handle(services, sink.SetService, sink.DeleteService)
		},
		func() (cache.ResourceEventHandlerRegistration, error) {
			return handle(slices, sink.SetSlice, sink.DeleteSlice)
		},
	} {
		r, err := reg()
		if err != nil {
			return err
		}
		synced = append(synced, r.HasSynced)
	}
	if _, err := handle(nodes, sink.SetNode, func(*v1.Node) { sink.SetNode(nil) }); err != nil {
		return err
	}
	objects.Start(ctx.Done())
	node.Start(ctx.Done())
	defer objects.Shutdown()
	defer node.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return fmt.Errorf("services and endpointslices: caches not synced: %w", context.Cause(ctx))
	}
	sink.Synced()
	<-ctx.Done()
	return nil
}

// selector leaves out other proxies' and headless Services and their slices.
func selector() labels.Selector {
	noProxyName, _ := labels.NewRequirement(source.LabelServiceProxyName, selection.DoesNotExist, nil)
	notHeadless, _ := labels.NewRequirement(source.LabelHeadless, selection.DoesNotExist, nil)
	return labels.NewSelector().Add(*noProxyName, *notHeadless)
}

// handle routes an informer's events to set and del, unwrapping the
// tombstones of deletions the watch missed.
func handle[T any](inf cache.SharedIndexInformer, set, del func(T)) (cache.ResourceEventHandlerRegistration, error) {
	return inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { typed(obj, set) },
		UpdateFunc: func(_, obj any) { typed(obj, set) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			typed(obj, del)
		},
	})
}

func typed[T any](obj any, fn func(T)) {
	if t, ok := obj.(T); ok {
		fn(t)
	}
}

// RestConfig builds the client configuration as kube-proxy does: in-cluster
// configuration when neither a kubeconfig (clientConnection.kubeconfig, the
// --kubeconfig flag) nor a master URL is given, else the kubeconfig with the
// master URL overriding its server; then the clientConnection settings.
func RestConfig(cc configv1alpha1.ClientConnectionConfiguration, master string) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if cc.Kubeconfig == "" && master == "" {
		if cfg, err = rest.InClusterConfig(); err != nil {
			return nil, fmt.Errorf("no --kubeconfig or --master given, and not running in a cluster: %w", err)
		}
	} else {
		rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: cc.Kubeconfig}
		overrides := &clientcmd.ConfigOverrides{ClusterInfo: clientcmdapi.Cluster{Server: master}}
		if cfg, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig(); err != nil {
			return nil, fmt.Errorf("clientConnection.kubeconfig %q: %w", cc.Kubeconfig, err)
		}
	}
	cfg.AcceptContentTypes = cc.AcceptContentTypes
	cfg.ContentType = cc.ContentType
	cfg.QPS = cc.QPS
	cfg.Burst = int(cc.Burst)
	cfg.UserAgent = "svcproxy"
	return cfg, nil
}

// readAnnotations are the annotations the proxy reads: an EndpointSlice's
// last-change-trigger-time and a Service's scheduler.
var readAnnotations = []string{v1.EndpointsLastChangeTriggerTime, plan.AnnotationScheduler}

// slim is an informer transform dropping what the proxy never reads before
// the object is cached: managedFields, annotations (kubectl's
// last-applied-configuration can be kilobytes) but readAnnotations, and a
// Node's image list.
func slim(obj any) (any, error) {
	if o, ok := obj.(metav1.ObjectMetaAccessor); ok {
		meta := o.GetObjectMeta()
		meta.SetManagedFields(nil)
		var keep map[string]string
		for _, k := range readAnnotations {
			if v, ok := meta.GetAnnotations()[k]; ok {
				if keep == nil {
					keep = map[string]string{}
				}
				keep[k] = v
			}
		}
		meta.SetAnnotations(keep)
	}
	if n, ok := obj.(*v1.Node); ok {
		n.Status.Images = nil
	}
	return obj, nil
}
