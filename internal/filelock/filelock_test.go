package filelock

import (
	"path/filepath"
	"testing"
)

// TestTryLock: a held lock is not taken again until its holder lets go.
func TestTryLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dir", "lock")
	unlock, err := Lock(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := TryLock(path); ok || err != nil {
		t.Fatalf("TryLock of a held lock: ok %v, %v", ok, err)
	}
	unlock()
	again, ok, err := TryLock(path)
	if !ok || err != nil {
		t.Fatalf("TryLock of a free lock: ok %v, %v", ok, err)
	}
	again()
}
