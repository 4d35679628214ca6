package plan

import "fmt"

// Capabilities say what a dataplane can write. Each dataplane declares
// its own, once; Config.Check tells whether a configuration asks for more,
// so the proxy refuses it at start and a sync never half-applies it. The
// zero value can write everything the plan resolves.
type Capabilities struct {
	// Dataplane names the dataplane, for errors.
	Dataplane string
	// PodPrefixes is how many pod-network prefixes of one family the
	// dataplane can match in one "masquerade unless the source is in"
	// rule; 0: any number.
	PodPrefixes int
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
