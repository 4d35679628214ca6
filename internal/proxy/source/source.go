// Package source delivers the objects the plan is a function of — Services,
// EndpointSlices and this node's Node — to the agent. Two sources exist:
// source/kube watches the Kubernetes API with client-go informers, and
// source/manifests watches a directory of YAML files for use without
// Kubernetes. Both call a Sink.
package source

import (
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
)

// Sink receives object changes. Calls may come from several goroutines.
type Sink interface {
	SetService(svc *v1.Service)
	DeleteService(svc *v1.Service)
	SetSlice(slice *discovery.EndpointSlice)
	DeleteSlice(slice *discovery.EndpointSlice)
	// SetNode reports this node's Node object; nil when it was deleted.
	SetNode(node *v1.Node)
	// Synced says the initial state has been delivered in full: every
	// Service and EndpointSlice listed once. No sync may run before it.
	Synced()
}

// Labels a Service proxy must honour, as kube-proxy does: a Service that
// names another proxy, or is headless, is not ours.
const (
	LabelServiceProxyName = "service.kubernetes.io/service-proxy-name"
	LabelHeadless         = v1.IsHeadlessService
)
