package bench

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestRunSmall runs the benchmark command at a tiny size, so `make bench`
// keeps working; the numbers themselves are for people, not assertions.
func TestRunSmall(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs nft")
	}
	var out bytes.Buffer
	if err := Run(context.Background(), &out, Options{Sizes: []int{20}, Endpoints: 3, Changes: 3, Dataplane: "nftables"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "\n20 ") || !strings.Contains(out.String(), "peak RSS") {
		t.Fatalf("no result row:\n%s", out.String())
	}
}
