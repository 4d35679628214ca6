package lab

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestNewStatePlansTheAddresses(t *testing.T) {
	st, err := NewState("lab", 3, "/bin/svcproxy", "nftables")
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ name, zone, ip, cidr, gw, pod0 string }{
		{"node1", "zone-a", "198.51.100.1", "10.244.1.0/24", "10.244.1.1", "10.244.1.2"},
		{"node2", "zone-b", "198.51.100.2", "10.244.2.0/24", "10.244.2.1", "10.244.2.2"},
		{"node3", "zone-a", "198.51.100.3", "10.244.3.0/24", "10.244.3.1", "10.244.3.2"},
	}
	if len(st.Nodes) != len(want) {
		t.Fatalf("nodes: %+v", st.Nodes)
	}
	for i, w := range want {
		n := st.Nodes[i]
		got := []string{n.Name, n.Zone, n.IP.String(), n.PodCIDR.String(), n.Gateway().String(), n.PodIP(0).String()}
		if strings.Join(got, " ") != strings.Join([]string{w.name, w.zone, w.ip, w.cidr, w.gw, w.pod0}, " ") {
			t.Errorf("node %d: got %v, want %+v", i, got, w)
		}
		if !ClusterCIDR.Contains(n.PodIP(0)) || !LAN.Contains(n.IP) || n.Netns != "lab-"+n.Name {
			t.Errorf("node %d outside the plan: %+v", i, n)
		}
	}
	if st.ClientNetns() != "lab-client" || st.LANNetns() != "lab-lan" || st.Kubeconfig != "/run/svcproxy-lab/lab/controlplane/kubeconfig" {
		t.Errorf("names: %s %s %s", st.ClientNetns(), st.LANNetns(), st.Kubeconfig)
	}
}

func TestNewStateRejectsBadInput(t *testing.T) {
	for _, c := range []struct {
		name  string
		nodes int
		mode  string
		want  string
	}{
		{"Lab", 3, "nftables", `lab name "Lab"`},
		{"a/b", 3, "nftables", `lab name "a/b"`},
		{"toolongname1", 3, "nftables", "lab name"},
		{"lab", 0, "nftables", "nodes: want 1 to 20, got 0"},
		{"lab", 21, "nftables", "nodes: want 1 to 20, got 21"},
		{"lab", 3, "ipvs6", `proxy mode "ipvs6": want one of nftables, iptables, ipvs`},
	} {
		if _, err := NewState(c.name, c.nodes, "x", c.mode); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewState(%q, %d, %q) = %v, want %q", c.name, c.nodes, c.mode, err, c.want)
		}
	}
}

func TestPodNetnsFitsAFileName(t *testing.T) {
	st, _ := NewState("lab", 1, "x", "nftables")
	if got := st.PodNetns("default", "web-1", "uid"); got != "lab-pod-default-web-1" {
		t.Errorf("PodNetns = %q", got)
	}
	long := st.PodNetns(strings.Repeat("n", 63), strings.Repeat("p", 253), "0123-uid")
	if len(long) > 255 || !strings.HasSuffix(long, "0123-uid") {
		t.Errorf("long PodNetns (%d bytes) = %q", len(long), long)
	}
}

// TestProcessesAreStoppedOnlyIfTheyAreStillOurs starts a process, records a
// second "process" that is really this test with a wrong start time (a
// recycled PID), and checks that stopping kills only the first.
func TestProcessesAreStoppedOnlyIfTheyAreStillOurs(t *testing.T) {
	st := &State{Name: "t", Dir: t.TempDir()}
	if err := st.startProcess("", "sleeper", "sleep", "60"); err != nil {
		t.Fatal(err)
	}
	// stubborn ignores SIGTERM (an ignored signal stays ignored across
	// exec), so only the SIGKILL after the grace period stops it.
	if err := st.startProcess("", "stubborn", "sh", "-c", `trap "" TERM; exec sleep 61`); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(st.Dir, "pids", "recycled"), []byte(strings.Join([]string{itoa(os.Getpid()), "1"}, " ")), 0o644)
	procs, err := st.Processes()
	if err != nil || len(procs) != 3 {
		t.Fatalf("Processes = %+v, %v", procs, err)
	}
	byName := map[string]Process{}
	for _, p := range procs {
		byName[p.Name] = p
	}
	if !byName["sleeper"].Running || !byName["stubborn"].Running || byName["recycled"].Running {
		t.Fatalf("Running: %+v", byName)
	}
	t.Cleanup(func() { // whatever stopProcesses does, leave nothing behind
		for _, name := range []string{"sleeper", "stubborn"} {
			if byName[name].Alive() {
				syscall.Kill(byName[name].PID, syscall.SIGKILL)
			}
		}
	})
	waitForExec(t, byName["stubborn"].PID, "sleep")
	if err := st.stopProcesses(300 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"sleeper", "stubborn"} {
		if byName[name].Alive() {
			t.Errorf("%s still runs", name)
		}
	}
	if _, err := os.Stat(filepath.Join(st.Dir, "pids")); !os.IsNotExist(err) {
		t.Errorf("pid files left: %v", err)
	}
	if data, _ := os.ReadFile(filepath.Join(st.Dir, "logs", "sleeper.log")); data == nil {
		t.Error("no log file for sleeper")
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// waitForExec waits until pid runs the program named command.
func waitForExec(t *testing.T, pid int, command string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if data, _ := os.ReadFile("/proc/" + itoa(pid) + "/comm"); strings.TrimSpace(string(data)) == command {
			return
		}
	}
	t.Fatalf("pid %d never ran %s", pid, command)
}

// TestCheckMachineSaysWhatIsMissing: without root and with nothing on
// PATH, one error names root and every command with its package.
func TestCheckMachineSaysWhatIsMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	err := checkMachine("nftables", 1000)
	for _, want := range []string{"root (", "run it with sudo", "ip to create the network namespaces", "package iproute2",
		"nft for svcproxy's nftables mode", "apt-get install iproute2 nftables"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("nftables lab, no root, empty PATH: %v; want %q", err, want)
		}
	}
	err = checkMachine("iptables", 0)
	if err == nil || strings.Contains(err.Error(), "root") || !strings.Contains(err.Error(), "iptables-legacy-restore for svcproxy's iptables mode") ||
		!strings.HasSuffix(err.Error(), "apt-get install iproute2 iptables") {
		t.Errorf("iptables lab as root, empty PATH: %v", err)
	}
	ipvsProc = filepath.Join(t.TempDir(), "ip_vs") // a kernel without IPVS
	err = checkMachine("ipvs", 0)
	for _, want := range []string{"iptables-nft-restore for svcproxy's ipvs mode", "ipvsadm to show IPVS virtual servers",
		"a kernel with IPVS for svcproxy's ipvs mode: this one has no " + ipvsProc, "hack/vm/run", "apt-get install iproute2 iptables ipvsadm"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ipvs lab as root, empty PATH, no IPVS: %v; want %q", err, want)
		}
	}
}
