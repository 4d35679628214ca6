// Command svcproxy is a Kubernetes Service proxy: a drop-in kube-proxy.
package main

import (
	"os"

	"github.com/svcproxy/svcproxy/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
