package dptest

import (
	"strings"
	"testing"
)

func TestCanonicalNft(t *testing.T) {
	a := `table ip6 b {
	chain c {
		ip6 daddr ::1 accept
	}
}
table ip a {
	comment "x"
	set s {
		type ipv4_addr
		elements = { 10.0.0.2, 10.0.0.1,
			     10.0.0.3 }
	}

	chain z {
		type filter hook input priority filter; policy accept;
		ct state new jump y
		meta mark 1 drop
	}

	chain y {
		ip saddr != { 10.1.0.0/16, 10.2.0.0/16 } drop
	}
}
`
	b := `table ip a {
	comment "x"
	chain y {
		ip saddr != { 10.1.0.0/16, 10.2.0.0/16 } drop
	}

	set s {
		type ipv4_addr
		elements = { 10.0.0.3,
			     10.0.0.1, 10.0.0.2 }
	}

	chain z {
		type filter hook input priority filter; policy accept;
		ct state new jump y
		meta mark 1 drop
	}
}
table ip6 b {
	chain c {
		ip6 daddr ::1 accept
	}
}
`
	ca, cb := CanonicalNft(a), CanonicalNft(b)
	if ca != cb {
		t.Errorf("same contents, different canonical forms:\n%s\n---\n%s", ca, cb)
	}
	for _, want := range []string{"table ip a {", `comment "x"`, "10.0.0.1\n\t\t\t10.0.0.2\n\t\t\t10.0.0.3", "ct state new jump y\n\t\tmeta mark 1 drop", "ip6 daddr ::1 accept", "{ 10.1.0.0/16, 10.2.0.0/16 }"} {
		if !strings.Contains(ca, want) {
			t.Errorf("canonical form lost %q:\n%s", want, ca)
		}
	}
	// Rule order is kept: swapping two rules must show.
	swapped := strings.Replace(a, "\t\tct state new jump y\n\t\tmeta mark 1 drop", "\t\tmeta mark 1 drop\n\t\tct state new jump y", 1)
	if CanonicalNft(swapped) == ca {
		t.Error("rule order ignored")
	}
	if d := diff(ca+"\n\t\t10.0.0.1 expires 1h59m", cb+"\n\t\t10.0.0.1 expires 1h58m"); d != "" {
		t.Errorf("diff does not ignore expiry countdowns:\n%s", d)
	}
}
