package lab

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"

	"github.com/svcproxy/svcproxy/internal/nsrun"
)

// UIFD is the file descriptor on which the lab process "ui" (`svcproxy
// lab ui-server`) finds its listener.
const UIFD = 3

// startUI opens a listener on a free port of the machine's loopback, the
// one socket the lab has in the machine's network namespace, and hands it
// to the lab process "ui", which serves the page (package lab/ui) on it
// for as long as the lab is up. Opening it here means the address is known
// and answers (connections wait in the backlog) before the process runs,
// and no other program can take the port in between.
func (s *State) startUI() error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("the page's listener: %w", err)
	}
	f, err := l.(*net.TCPListener).File()
	l.Close() // f is a duplicate: the socket stays open
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.Command(s.Self, "lab", "ui-server", "--name", s.Name)
	cmd.ExtraFiles = []*os.File{f} // the child's fd 3
	if _, err := s.start("", "ui", cmd); err != nil {
		return err
	}
	s.UI = "http://" + l.Addr().String() + "/"
	return s.save()
}

// uiAnswers checks that the page is served.
func (s *State) uiAnswers(ctx context.Context) error {
	code, _, err := nsrun.Get(ctx, "", s.UI, RequestTimeout)
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("%s answered %d", s.UI, code)
	}
	return err
}

// UIListener returns the listener `lab up` handed to the "ui" process.
func UIListener() (net.Listener, error) {
	f := os.NewFile(UIFD, "ui-listener")
	if f == nil {
		return nil, fmt.Errorf("no file descriptor %d: start the page with `svcproxy lab up`", UIFD)
	}
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("file descriptor %d is not the page's listener (start it with `svcproxy lab up`): %w", UIFD, err)
	}
	return l, nil
}
