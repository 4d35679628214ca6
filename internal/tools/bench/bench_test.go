package bench

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/svcproxy/svcproxy/internal/testkit/testnet"
)

// TestRunSmall runs the benchmark command at a tiny size, so `make bench`
// keeps working; the numbers themselves are for people, not assertions.
func TestRunSmall(t *testing.T) {
	testnet.RequireKernel(t, "nft")
	var out bytes.Buffer
	if err := Run(context.Background(), &out, Options{Sizes: []int{20}, Endpoints: 3, Changes: 3, Dataplanes: []string{"nftables"}}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "\nnftables         20 ") || !strings.Contains(out.String(), "peak RSS") {
		t.Fatalf("no result row:\n%s", out.String())
	}
}
