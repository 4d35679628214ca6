package ui

import (
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	listersv1 "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
)

// listers read the informers' caches.
type listers struct {
	nodes    listersv1.NodeLister
	pods     listersv1.PodLister
	services listersv1.ServiceLister
	slices   discoverylisters.EndpointSliceLister
}

// watch registers informers on the objects the page draws; poke is called
// on every change.
func watch(factory informers.SharedInformerFactory, poke func()) (listers, error) {
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke() },
		UpdateFunc: func(any, any) { poke() },
		DeleteFunc: func(any) { poke() },
	}
	core, disc := factory.Core().V1(), factory.Discovery().V1()
	for _, inf := range []cache.SharedIndexInformer{
		core.Nodes().Informer(), core.Pods().Informer(), core.Services().Informer(), disc.EndpointSlices().Informer(),
	} {
		if _, err := inf.AddEventHandler(handler); err != nil {
			return listers{}, err
		}
	}
	return listers{core.Nodes().Lister(), core.Pods().Lister(), core.Services().Lister(), disc.EndpointSlices().Lister()}, nil
}

// objects lists everything from the caches.
func (l listers) objects() (apiObjects, error) {
	var o apiObjects
	var err error
	if o.nodes, err = l.nodes.List(labels.Everything()); err != nil {
		return o, err
	}
	if o.pods, err = l.pods.List(labels.Everything()); err != nil {
		return o, err
	}
	if o.services, err = l.services.List(labels.Everything()); err != nil {
		return o, err
	}
	o.slices, err = l.slices.List(labels.Everything())
	return o, err
}
