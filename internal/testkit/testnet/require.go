package testnet

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// KernelAvailable says why kernel tests cannot run here, or nil: they need
// root (for network namespaces) and the ip tool, and the tools named.
func KernelAvailable(tools ...string) error {
	if os.Geteuid() != 0 {
		return errors.New("kernel tests need root")
	}
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("kernel tests need %s: %w", tool, err)
		}
	}
	return nil
}

// RequireKernel skips t unless KernelAvailable(tools...).
func RequireKernel(t testing.TB, tools ...string) {
	t.Helper()
	if err := KernelAvailable(tools...); err != nil {
		t.Skip(err)
	}
}
