package lab

import (
	"errors"
	"fmt"
	"os"
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
// proxy mode. IPVS mode pairs IPVS with iptables rules, as kube-proxy's
// does, and the walkthrough shows its virtual servers with ipvsadm.
func requirements(mode string) []requirement {
	reqs := []requirement{{"ip", "iproute2", "to create the network namespaces, veths and the bridge"}}
	switch mode {
	case "iptables", "ipvs":
		for _, tool := range []string{"iptables", "iptables-nft-save", "iptables-nft-restore", "iptables-legacy-save", "iptables-legacy-restore"} {
			reqs = append(reqs, requirement{tool, "iptables", "for svcproxy's " + mode + " mode"})
		}
		if mode == "ipvs" {
			reqs = append(reqs, requirement{"ipvsadm", "ipvsadm", "to show IPVS virtual servers (the walkthrough's rules)"})
		}
		return reqs
	}
	return append(reqs, requirement{"nft", "nftables", "for svcproxy's nftables mode"})
}

// checkMachine says, all at once, what the lab needs that this machine
// lacks: root, commands on PATH, and for ipvs mode a kernel with IPVS. Go
// is needed only to build the control plane the first time; package
// pinned says so then.
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
	if mode == "ipvs" {
		if err := kernelHasIPVS(); err != nil {
			missing = append(missing, err.Error())
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

// ipvsProc exists when the running kernel has IPVS.
var ipvsProc = "/proc/net/ip_vs"

// kernelHasIPVS checks for IPVS, loading ip_vs first if it can (the kernel
// would also load it when svcproxy first asks for it, but a missing module
// is better said before the lab starts).
func kernelHasIPVS() error {
	if _, err := os.Stat(ipvsProc); err == nil {
		return nil
	}
	out, err := exec.Command("modprobe", "ip_vs").CombinedOutput()
	if _, statErr := os.Stat(ipvsProc); statErr == nil {
		return nil
	}
	reason := strings.TrimSpace(string(out))
	if reason == "" && err != nil {
		reason = err.Error()
	}
	return fmt.Errorf("a kernel with IPVS for svcproxy's ipvs mode: this one has no %s (modprobe ip_vs: %s); "+
		"in a checkout of svcproxy, hack/vm/run -- bin/svcproxy lab demo --proxy-mode ipvs runs the lab in a VM whose kernel has it", ipvsProc, reason)
}
