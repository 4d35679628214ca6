package ipvs

import (
	"testing"

	"github.com/svcproxy/svcproxy/internal/testkit/vm"
)

// TestMain runs the package's tests where the kernel has IPVS: here if it
// does, else in one VM (internal/testkit/vm) for the whole package.
func TestMain(m *testing.M) { vm.Main(m, vm.IPVS) }
