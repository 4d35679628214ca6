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
	for _, args := range [][]string{{"--help"}, {"help"}, {"-h"}} {
		code, out, _ := run(args...)
		for _, want := range []string{"svcproxy demo", "svcproxy lab up", "--manifests DIR", "--config string", "--proxy-mode", "--cleanup"} {
			if code != 0 || !strings.Contains(out, want) {
				t.Errorf("%v: exit %d, output lacks %q", args, code, want)
			}
		}
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
		{[]string{"lab", "ui", "--name", "nolab"}, `lab "nolab": lab is not up`},
	} {
		code, _, stderr := run(c.args...)
		if code == 0 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, stderr %q, want %q", c.args, code, stderr, c.want)
		}
	}
}
