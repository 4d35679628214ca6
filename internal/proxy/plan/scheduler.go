package plan

import (
	"fmt"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
)

// AnnotationScheduler chooses, for one Service, how new connections are
// spread over its endpoints: one of Schedulers. It overrides the
// configured default (Config.Scheduler, --ipvs-scheduler) for every port
// of the Service. No kube-proxy offers it.
const AnnotationScheduler = "svcproxy.io/scheduler"

// Schedulers are the scheduler names a Service or the configuration may
// choose: the Linux kernel's IPVS schedulers.
var Schedulers = []string{"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh"}

// Scheduling says how a port's new connections are spread: what was
// chosen, and what the dataplane does (ServicePort.Scheduler).
type Scheduling struct {
	// Chosen is the scheduler asked for: the Service's annotation, else
	// Config.Scheduler; "" when neither names one.
	Chosen string `json:"chosen,omitempty"`
	// From says where Chosen came from, for messages: the annotation or
	// the configuration.
	From string `json:"from,omitempty"`
	// Unsupported, when set, says in words that the dataplane cannot
	// express Chosen and what it does instead. The agent reports it (an
	// Event on the Service, a warning, a metric) and status shows it.
	Unsupported string `json:"unsupported,omitempty"`
}

// Where a chosen scheduler comes from.
const (
	fromAnnotation = "annotation " + AnnotationScheduler
	fromConfig     = "--ipvs-scheduler"
)

// maxShown bounds how much of an invalid annotation value an error repeats.
const maxShown = 64

// chosenScheduler reads a Service's annotation. An invalid value is an
// error naming the Service and the annotation; the Service keeps the
// configured default, as if it had none.
func chosenScheduler(svc *v1.Service, cfg *Config) (chosen, from string, err error) {
	v, ok := svc.Annotations[AnnotationScheduler]
	if ok && slices.Contains(Schedulers, v) {
		return v, fromAnnotation, nil
	}
	if ok {
		if len(v) > maxShown {
			v = v[:maxShown] + "..."
		}
		err = fmt.Errorf("service %s: annotation %s: %q is not a scheduler (want one of %s); the Service uses the default",
			objectName(svc.Namespace, svc.Name), AnnotationScheduler, v, strings.Join(Schedulers, ", "))
	}
	if cfg.Scheduler != "" {
		return cfg.Scheduler, fromConfig, err
	}
	return "", "", err
}

// resolveScheduler works out, once for every dataplane, what the
// dataplane does with the chosen scheduler: the scheduler itself when it
// can express it; wrr as rr, since every endpoint weighs the same in the
// plan; else its default (Capabilities.DefaultScheduler, "" for a uniform
// random choice), saying so in Unsupported.
func resolveScheduler(chosen, from string, caps *Capabilities) (string, Scheduling) {
	s := Scheduling{Chosen: chosen, From: from}
	switch {
	case chosen == "":
		return caps.DefaultScheduler, s
	case caps.Expresses(chosen):
		return chosen, s
	case chosen == "wrr" && caps.Expresses("rr"):
		return "rr", s
	}
	instead := "spreads new connections uniformly at random"
	if d := caps.DefaultScheduler; d != "" {
		instead = "uses " + d
	}
	can := "no scheduler"
	if len(caps.Schedulers) > 0 {
		can = strings.Join(caps.Schedulers, ", ")
	}
	s.Unsupported = fmt.Sprintf("scheduler %q (%s) cannot be expressed by the %s dataplane (it expresses %s); it %s",
		chosen, from, caps.name(), can, instead)
	return caps.DefaultScheduler, s
}
