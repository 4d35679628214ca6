package lab

import (
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
)

// requirement is one thing the machine must have for the lab.
type requirement struct {
	command string // on PATH
	pkg     string // the Debian package that has it
	why     string
}

// requirements are the commands the lab and its nodes' svcproxy run, by
// proxy mode.
func requirements(mode string) []requirement {
	reqs := []requirement{{"ip", "iproute2", "to create the network namespaces, veths and the bridge"}}
	if mode == "iptables" {
		for _, tool := range []string{"iptables", "iptables-nft-save", "iptables-nft-restore", "iptables-legacy-save", "iptables-legacy-restore"} {
			reqs = append(reqs, requirement{tool, "iptables", "for svcproxy's iptables mode"})
		}
		return reqs
	}
	return append(reqs, requirement{"nft", "nftables", "for svcproxy's nftables mode"})
}

// checkMachine says, all at once, what the lab needs that this machine
// lacks: root, and commands on PATH. Go is needed only to build the
// control plane the first time; package pinned says so then.
func checkMachine(mode string, euid int) error {
	var missing []string
	if euid != 0 {
		missing = append(missing, "root (the lab creates network namespaces, veths and a bridge, and programs the kernel's firewall in them): run it with sudo")
	}
	var pkgs []string
	for _, r := range requirements(mode) {
		if _, err := exec.LookPath(r.command); err != nil {
			missing = append(missing, fmt.Sprintf("%s %s (Debian and Ubuntu: package %s)", r.command, r.why, r.pkg))
			if !slices.Contains(pkgs, r.pkg) {
				pkgs = append(pkgs, r.pkg)
			}
		}
	}
	if len(missing) == 0 {
		return nil
	}
	msg := "the lab needs:\n  " + strings.Join(missing, "\n  ")
	if len(pkgs) > 0 {
		msg += "\ninstall with: apt-get install " + strings.Join(pkgs, " ")
	}
	return errors.New(msg)
}
