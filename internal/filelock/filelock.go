// Package filelock serialises processes over a shared file: the builds of
// cached tools (the control plane, the test VM's kernel) that several test
// processes may start at once, and the test VMs themselves.
package filelock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// Lock takes an exclusive flock on path, creating it and its directory,
// waiting for any other holder, and returns the function that releases it.
func Lock(path string) (unlock func(), err error) {
	unlock, _, err = lock(path, syscall.LOCK_EX)
	return unlock, err
}

// TryLock is Lock without the wait: ok is false, and nothing is held, if
// another holder has path.
func TryLock(path string) (unlock func(), ok bool, err error) {
	return lock(path, syscall.LOCK_EX|syscall.LOCK_NB)
}

func lock(path string, how int) (unlock func(), ok bool, err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, false, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, false, err
	}
	err = syscall.Flock(int(f.Fd()), how)
	switch {
	case err == nil:
		return func() { f.Close() }, true, nil
	case errors.Is(err, syscall.EWOULDBLOCK):
		f.Close()
		return nil, false, nil
	}
	f.Close()
	return nil, false, fmt.Errorf("lock %s: %w", path, err)
}
