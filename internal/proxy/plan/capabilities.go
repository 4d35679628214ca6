package plan

import (
	"fmt"
	"slices"
)

// Capabilities say what a dataplane can write. Each dataplane declares
// its own, once; Config.Check tells whether a configuration asks for more,
// so the proxy refuses it at start and a sync never half-applies it; the
// plan resolves each port's scheduler against them (Config.Dataplane). The
// zero value can write every outcome the plan resolves, and spreads new
// connections uniformly at random only.
type Capabilities struct {
	// Dataplane names the dataplane, for errors.
	Dataplane string
	// PodPrefixes is how many pod-network prefixes of one family the
	// dataplane can match in one "masquerade unless the source is in"
	// rule; 0: any number.
	PodPrefixes int
	// Schedulers are the schedulers (of Schedulers) the dataplane can
	// express; a Service choosing another gets DefaultScheduler.
	Schedulers []string
	// DefaultScheduler is what the dataplane does when no scheduler is
	// chosen or the chosen one cannot be expressed: one of Schedulers, or
	// "" for a uniform random choice.
	DefaultScheduler string
}

// Expresses reports whether the dataplane can express a scheduler.
func (c *Capabilities) Expresses(scheduler string) bool {
	return slices.Contains(c.Schedulers, scheduler)
}

func (c *Capabilities) name() string {
	if c.Dataplane == "" {
		return "configured"
	}
	return c.Dataplane
}

// Check returns an error naming the setting when the configuration asks
// for more than caps can write.
func (c *Config) Check(caps Capabilities) error {
	if caps.PodPrefixes == 0 {
		return nil
	}
	for _, f := range Families {
		if n := len(c.clusterCIDRsOf(f)); n > caps.PodPrefixes {
			return fmt.Errorf("clusterCIDR: %d %s prefixes (%v); the %s dataplane can match %d per family",
				n, f, c.clusterCIDRsOf(f), caps.Dataplane, caps.PodPrefixes)
		}
	}
	return nil
}
