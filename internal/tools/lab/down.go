package lab

import (
	"context"
	"errors"
	"os"
	"path/filepath"
)

// Down removes the lab called name: it stops the lab's recorded processes,
// deletes its namespaces (pods' included) and their files, and its state
// directory. It works from whatever exists, so it also cleans up after an
// Up that failed or was killed, and does nothing for a lab that is not up.
func Down(ctx context.Context, name string) error {
	if !labName.MatchString(name) {
		return errors.New("lab name " + name + ": not a lab name")
	}
	s := &State{Name: name, Dir: filepath.Join(StateRoot, name)}
	err := errors.Join(
		s.stopProcesses(stopGrace),
		s.removeNetwork(),
	)
	if err != nil {
		return err
	}
	return os.RemoveAll(s.Dir)
}
