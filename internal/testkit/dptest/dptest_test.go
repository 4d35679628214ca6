package dptest

import (
	"strings"
	"testing"
)

func TestDiffIgnoresExpiry(t *testing.T) {
	if d := diff("set s {\n\t\t10.0.0.1 expires 1h59m", "set s {\n\t\t10.0.0.1 expires 1h58m"); d != "" {
		t.Errorf("diff does not ignore expiry countdowns:\n%s", d)
	}
	if d := diff("a\nb", "b\na"); !strings.Contains(d, "same lines, different order") {
		t.Errorf("reordered lines: %q", d)
	}
}
