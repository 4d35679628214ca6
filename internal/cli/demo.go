package cli

import (
	"context"
	"fmt"
	"io"

	"github.com/svcproxy/svcproxy/internal/tools/demo"
)

func runDemo(ctx context.Context, args []string, stdout, _ io.Writer) error {
	if len(args) > 0 {
		return fmt.Errorf("demo takes no arguments, got %q", args)
	}
	return demo.Run(ctx, stdout)
}
