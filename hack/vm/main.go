// Command vm runs one command as root in a throwaway VM whose kernel has
// IPVS and ipset (see internal/testkit/vm), with this machine's file system
// read-only under a writable overlay, and exits with the command's status:
//
//	go run ./hack/vm -- ipvsadm -Ln
//	hack/vm/run -- sh -c 'cd internal/foo && ./foo.test -test.v'
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/svcproxy/svcproxy/internal/testkit/vm"
)

func main() {
	timeout := flag.Duration("timeout", 0, "kill the VM after this long (0: 30m)")
	cpus := flag.Int("cpus", 0, "virtual CPUs (0: 2)")
	mem := flag.Int("memory", 0, "memory in MiB (0: 4096)")
	verbose := flag.Bool("v", false, "print the boot and total time to stderr")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: %s [flags] -- COMMAND [ARG...]\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := vm.Run(ctx, vm.Command{Args: flag.Args(), Timeout: *timeout, CPUs: *cpus, MemoryMiB: *mem})
	if *verbose {
		fmt.Fprintf(os.Stderr, "vm: boot %.1fs, total %.1fs, exit %d\n", res.Boot.Seconds(), res.Elapsed.Seconds(), res.ExitCode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(125)
	}
	os.Exit(res.ExitCode)
}
