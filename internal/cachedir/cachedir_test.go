package cachedir

import (
	"path/filepath"
	"testing"
)

// TestDir: inside a checkout the cache is the checkout's .cache; elsewhere,
// the user's cache directory.
func TestDir(t *testing.T) {
	dir, err := Dir()
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(dir) != ".cache" || !isModuleRoot(filepath.Dir(dir)) {
		t.Errorf("in the checkout: %s", dir)
	}
	t.Chdir(t.TempDir())
	t.Setenv("XDG_CACHE_HOME", "/var/cache/someone")
	if dir, err := Dir(); err != nil || dir != "/var/cache/someone/svcproxy" {
		t.Errorf("outside a checkout: %s, %v", dir, err)
	}
	t.Setenv("XDG_CACHE_HOME", "")
	t.Setenv("HOME", "/home/someone")
	if dir, err := Dir(); err != nil || dir != "/home/someone/.cache/svcproxy" {
		t.Errorf("outside a checkout, no XDG_CACHE_HOME: %s, %v", dir, err)
	}
}
