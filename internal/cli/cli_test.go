package cli

import (
	"bytes"
	"strings"
	"testing"
)

func run(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = Main(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestVersion(t *testing.T) {
	for _, arg := range []string{"--version", "version"} {
		code, out, _ := run(arg)
		if code != 0 || !strings.HasPrefix(out, "svcproxy ") || !strings.Contains(out, "\ncommit: ") || !strings.Contains(out, "kube-proxy: v1.36 compatible") {
			t.Errorf("%s = %d %q", arg, code, out)
		}
	}
}

func TestHelpShowsSubcommandsAndKubeProxyFlags(t *testing.T) {
	for _, args := range [][]string{nil, {"--help"}, {"help"}, {"-h"}} {
		code, out, errOut := run(args...)
		for _, want := range []string{"svcproxy lab up", "svcproxy status", "svcproxy trace", "svcproxy bench", "--manifests DIR", "--config string", "--proxy-mode", "--cleanup"} {
			if code != 0 || !strings.Contains(out, want) || errOut != "" {
				t.Errorf("%q: exit %d, stderr %q, output lacks %q", args, code, errOut, want)
			}
		}
	}
}

// TestSubcommandFlags: every subcommand prints its own usage for --help and
// -h, on standard output, and exits 0; each refuses a flag that belongs to
// another, naming it, with exit 2 and nothing on standard output. Lab
// commands get a lab name no lab can have first, so that a build that
// accepted the foreign flag would fail at once instead of touching a lab.
func TestSubcommandFlags(t *testing.T) {
	for _, c := range []struct {
		cmd     []string
		foreign string // a flag of another subcommand
	}{
		{[]string{"status"}, "--src=10.0.0.1"},
		{[]string{"trace"}, "--node=node1"},
		{[]string{"bench"}, "--metrics=127.0.0.1:10249"},
		{[]string{"version"}, "--node=node1"},
		{[]string{"lab", "up"}, "--keep"},
		{[]string{"lab", "ui"}, "--nodes=3"},
		{[]string{"lab", "down"}, "--nodes=3"},
		{[]string{"lab", "status"}, "--src=10.0.0.1"},
		{[]string{"lab", "trace"}, "--nodes=3"},
		{[]string{"lab", "exec"}, "--node=node1"},
		{[]string{"lab", "demo"}, "--node=node1"},
		{[]string{"lab", "kubelet"}, "--keep"},
		{[]string{"lab", "lbpool"}, "--node=node1"},
		{[]string{"lab", "ui-server"}, "--keep"},
	} {
		name := strings.Join(c.cmd, " ")
		for _, help := range []string{"--help", "-h"} {
			code, out, errOut := run(append(c.cmd, help)...)
			if code != 0 || !strings.HasPrefix(out, "Usage: svcproxy "+name+" ") || errOut != "" {
				t.Errorf("%s %s: exit %d, stdout %q, stderr %q; want its usage on stdout and exit 0", name, help, code, out, errOut)
			}
		}
		flagName, _, _ := strings.Cut(strings.TrimPrefix(c.foreign, "--"), "=")
		args := append([]string{}, c.cmd...)
		if c.cmd[0] == "lab" {
			args = append(args, "--name=Not_A_Lab")
		}
		code, out, errOut := run(append(args, c.foreign)...)
		if code != 2 || out != "" || !strings.Contains(errOut, "flag provided but not defined: -"+flagName) || !strings.Contains(errOut, name+" --help") {
			t.Errorf("%s %s: exit %d, stdout %q, stderr %q; want exit 2 naming the flag", name, c.foreign, code, out, errOut)
		}
	}
	// lab kubectl passes every argument but a leading --name=NAME to
	// kubectl, so it has only its own --help.
	code, out, _ := run("lab", "kubectl", "--help")
	if code != 0 || !strings.HasPrefix(out, "Usage: svcproxy lab kubectl ") {
		t.Errorf("lab kubectl --help: exit %d, stdout %q", code, out)
	}
}

// TestLabUsage: bare "svcproxy lab" prints the lab's commands, the
// internal ones apart; "svcproxy demo" is gone.
func TestLabUsage(t *testing.T) {
	code, out, _ := run("lab")
	internal := strings.Index(out, "Internal")
	if code != 0 || internal < 0 || strings.Index(out, "lab kubelet") < internal || strings.Index(out, "lab lbpool") < internal || strings.Index(out, "lab ui-server") < internal ||
		strings.Index(out, "lab demo") > internal || strings.Index(out, "lab up") > internal {
		t.Errorf("svcproxy lab: exit %d:\n%s", code, out)
	}
	if code, _, errOut := run("demo"); code != 2 || !strings.Contains(errOut, `unknown command "demo"`) {
		t.Errorf("svcproxy demo: exit %d, stderr %q; want it unknown", code, errOut)
	}
	if code, _, errOut := run("lab", "frobnicate"); code != 2 || !strings.Contains(errOut, `unknown command "frobnicate"`) {
		t.Errorf("svcproxy lab frobnicate: exit %d, stderr %q", code, errOut)
	}
}

func TestBadInputNamesTheFlagOrField(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--proxy-mod=nftables"}, "unknown flag: --proxy-mod"},
		{[]string{"--iptables-masquerade-bit=40"}, "KubeProxyConfiguration.iptables.masqueradeBit: Invalid value: 40"},
		{[]string{"--config=/nonexistent/kube-proxy.yaml"}, "/nonexistent/kube-proxy.yaml"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
	}
	for _, tt := range tests {
		code, _, errOut := run(tt.args...)
		if code == 0 || !strings.Contains(errOut, tt.want) {
			t.Errorf("%v: exit %d, stderr %q, want it to contain %q", tt.args, code, errOut, tt.want)
		}
	}
}

func TestWriteConfigTo(t *testing.T) {
	path := t.TempDir() + "/config.yaml"
	if code, _, errOut := run("--proxy-mode=iptables", "--write-config-to="+path); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if code, _, errOut := run("--config="+path, "--write-config-to="+path+".2"); code != 0 {
		t.Fatalf("the written config does not load back: %s", errOut)
	}
}

// TestExplainCommandsExplainTheirErrors: a bad packet names the flag, and
// no running svcproxy is said so, with the address asked.
func TestExplainCommandsExplainTheirErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"trace", "--src", "nope", "--dst", "10.96.0.1:443"}, `--src "nope"`},
		{[]string{"trace", "--src", "10.0.0.1", "--dst", "10.96.0.1"}, `--dst "10.96.0.1"`},
		{[]string{"status", "--metrics", "127.0.0.1:1"}, "asking svcproxy at 127.0.0.1:1 (is it running"},
		{[]string{"status", "--metrics", "127.0.0.1:1", "--output", "yaml"}, "asking svcproxy"},
		{[]string{"lab", "trace", "--name", "nolab", "--node", "node1"}, `lab "nolab": lab is not up`},
		{[]string{"status", "extra"}, `unexpected argument "extra"`},
		{[]string{"lab", "ui", "--name", "nolab"}, `lab "nolab": lab is not up`},
	} {
		code, _, stderr := run(c.args...)
		if code == 0 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, stderr %q, want %q", c.args, code, stderr, c.want)
		}
	}
}
