package lab

import (
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestUIListenerIsInherited: a process handed a listener as file
// descriptor UIFD, as startUI hands it, serves on it; without one it says
// how the page is started.
func TestUIListenerIsInherited(t *testing.T) {
	if os.Getenv("SVCPROXY_TEST_UI_CHILD") == "1" {
		l, err := UIListener()
		if err != nil {
			os.Stdout.WriteString("error: " + err.Error())
			os.Exit(0)
		}
		c, err := l.Accept()
		if err != nil {
			os.Exit(1)
		}
		c.Write([]byte("served"))
		c.Close()
		os.Exit(0)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := l.(*net.TCPListener).File()
	l.Close()
	if err != nil {
		t.Fatal(err)
	}
	child := func(files ...*os.File) *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^TestUIListenerIsInherited$")
		cmd.Env = append(os.Environ(), "SVCPROXY_TEST_UI_CHILD=1")
		cmd.ExtraFiles = files
		return cmd
	}
	withListener := child(f)
	out := &strings.Builder{}
	withListener.Stdout = out
	if err := withListener.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatalf("the address answers only while a process holds the listener: %v", err)
	}
	buf := make([]byte, 16)
	n, _ := c.Read(buf)
	c.Close()
	withListener.Wait()
	if string(buf[:n]) != "served" {
		t.Errorf("the child served %q (%s)", buf[:n], out)
	}
	without, err := child().Output()
	if err != nil || !strings.Contains(string(without), "`svcproxy lab up`") {
		t.Errorf("without a listener: %q %v", without, err)
	}
}
