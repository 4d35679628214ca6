package plan

import (
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/svcproxy/svcproxy/internal/testkit/objects"
)

// TestScheduler: a port's scheduler is the Service's annotation, else the
// configured default, resolved against what the dataplane can express; an
// invalid annotation is an error naming the Service and the annotation,
// and the Service is still planned, with the default.
func TestScheduler(t *testing.T) {
	nft := Capabilities{Dataplane: "nftables", Schedulers: []string{"rr", "sh"}}
	ipvs := Capabilities{Dataplane: "ipvs", Schedulers: Schedulers, DefaultScheduler: "rr"}
	for _, tt := range []struct {
		name       string
		annotation string // "": none
		def        string // Config.Scheduler
		caps       Capabilities
		want       string // ServicePort.Scheduler
		chosen     string
		unsupport  string // a word Scheduling.Unsupported must hold; "": none
		err        string // a word the error must hold; "": none
	}{
		{name: "nothing chosen: random", caps: nft},
		{name: "nothing chosen: the dataplane's default", caps: ipvs, want: "rr"},
		{name: "the configured default", def: "sh", caps: ipvs, want: "sh", chosen: "sh"},
		{name: "annotation", annotation: "sh", caps: nft, want: "sh", chosen: "sh"},
		{name: "annotation overrides the default", annotation: "lc", def: "sh", caps: ipvs, want: "lc", chosen: "lc"},
		{name: "wrr is rr: endpoints weigh the same", annotation: "wrr", caps: nft, want: "rr", chosen: "wrr"},
		{name: "not expressible: random, said", annotation: "lc", caps: nft, chosen: "lc", unsupport: `"lc" (annotation svcproxy.io/scheduler) cannot be expressed by the nftables dataplane (it expresses rr, sh); it spreads new connections uniformly at random`},
		{name: "not expressible at all", annotation: "rr", caps: Capabilities{Dataplane: "iptables"}, chosen: "rr", unsupport: "it expresses no scheduler"},
		{name: "invalid annotation: the default", annotation: "fastest", def: "sh", caps: ipvs, want: "sh", chosen: "sh",
			err: `service ns/web: annotation svcproxy.io/scheduler: "fastest" is not a scheduler`},
		{name: "invalid annotation, no default", annotation: "RR", caps: nft, err: `"RR" is not a scheduler`},
		{name: "invalid annotation, long: shortened", annotation: strings.Repeat("x", 300), caps: nft, err: `"` + strings.Repeat("x", 64) + `..." is not`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig
			cfg.Scheduler, cfg.Dataplane = tt.def, tt.caps
			var opts []objects.ServiceOption
			if tt.annotation != "" {
				opts = append(opts, objects.Annotation(AnnotationScheduler, tt.annotation))
			}
			p, errs := Build(Input{Services: []*v1.Service{svc("web", opts...)}, Config: cfg})
			if len(p.Ports) != 1 {
				t.Fatalf("%d ports planned, want 1 (errors %v)", len(p.Ports), errs)
			}
			switch {
			case tt.err == "" && len(errs) > 0:
				t.Errorf("errors %v", errs)
			case tt.err != "" && (len(errs) != 1 || !strings.Contains(errs[0].Error(), tt.err)):
				t.Errorf("errors %v, want one with %q", errs, tt.err)
			}
			for _, sp := range p.Ports {
				if sp.Scheduler != tt.want || sp.Scheduling.Chosen != tt.chosen {
					t.Errorf("scheduler %q (chosen %q), want %q (chosen %q)", sp.Scheduler, sp.Scheduling.Chosen, tt.want, tt.chosen)
				}
				if got := sp.Scheduling.Unsupported; (tt.unsupport == "") != (got == "") || !strings.Contains(got, tt.unsupport) {
					t.Errorf("unsupported %q, want %q", got, tt.unsupport)
				}
			}
		})
	}
}
