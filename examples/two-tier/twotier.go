// Package twotier embeds the seeds' two-tier example (the YAML files next to
// this one) for the lab walkthrough, which applies them as a reader would
// with `svcproxy lab kubectl apply -f examples/two-tier/FILE`.
package twotier

import "embed"

// Files holds the example's YAML files.
//
//go:embed *.yaml
var Files embed.FS
