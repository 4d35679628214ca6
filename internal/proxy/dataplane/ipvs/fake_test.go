package ipvs

import (
	"context"
	"fmt"
	"math/rand"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

var (
	vip     = netip.MustParseAddr("10.96.0.10")
	nodeIP  = netip.MustParseAddr("198.51.100.1")
	podA    = netip.MustParseAddr("10.244.1.2")
	podB    = netip.MustParseAddr("10.244.1.3")
	podC    = netip.MustParseAddr("10.244.2.2")
	vipPort = netip.AddrPortFrom(vip, 80)
)

// sampleState has a ClusterIP and a NodePort virtual server and one set
// of each type.
func sampleState() State {
	reals := []RealServer{{Address: podA, Port: 8080, Weight: 1}, {Address: podB, Port: 8080, Weight: 1}}
	return State{
		Addresses: []netip.Addr{vip},
		Services: []VirtualServer{
			{Address: vip, Protocol: TCP, Port: 80, Scheduler: "rr", Reals: slices.Clone(reals)},
			{Address: vip, Protocol: UDP, Port: 53, Scheduler: "sh", Flags: FlagSched2, Reals: slices.Clone(reals)},
			{Address: nodeIP, Protocol: TCP, Port: 30080, Scheduler: "wrr", PersistenceTimeout: 3 * time.Hour, PersistenceMask: 24, Reals: slices.Clone(reals)},
		},
		Sets: sampleSets(),
	}
}

func sampleSets() []Set {
	return []Set{
		{Name: "KUBE-CLUSTER-IP", Type: HashIPPort, Family: IPv4, Entries: []Entry{
			{IP: vip, Protocol: TCP, Port: 80, Comment: "default/web:http"},
			{IP: vip, Protocol: UDP, Port: 53, Comment: "default/web:dns"}}},
		{Name: "KUBE-LOOP-BACK", Type: HashIPPortIP, Family: IPv4, Entries: []Entry{
			{IP: podA, Protocol: TCP, Port: 8080, IP2: podA}}},
		{Name: "KUBE-LOAD-BALANCER-SOURCE-CIDR", Type: HashIPPortNet, Family: IPv4, Entries: []Entry{
			{IP: netip.MustParseAddr("203.0.113.7"), Protocol: TCP, Port: 80, Net: netip.MustParsePrefix("192.0.2.0/24")}}},
		{Name: "KUBE-IPVS-EXCLUDE-CIDRS", Type: HashNet, Family: IPv4, Entries: []Entry{
			{Net: netip.MustParsePrefix("10.200.0.0/16"), Comment: "excluded"}}},
		{Name: "KUBE-NODE-PORT-TCP", Type: BitmapPort, Entries: []Entry{{Port: 30080, Comment: "default/web:http"}}},
		{Name: "KUBE-6-CLUSTER-IP", Type: HashIPPort, Family: IPv6, Entries: []Entry{
			{IP: netip.MustParseAddr("fd00:10:96::a"), Protocol: TCP, Port: 80}}},
		{Name: "KUBE-IPVS-IPS", Type: HashIP, Family: IPv4, Entries: []Entry{{IP: vip}}},
	}
}

const sampleDump = `interface kube-ipvs0
  address 10.96.0.10
service UDP 10.96.0.10:53 sh flags flag-2
  -> 10.244.1.2:8080 weight 1
  -> 10.244.1.3:8080 weight 1
service TCP 10.96.0.10:80 rr
  -> 10.244.1.2:8080 weight 1
  -> 10.244.1.3:8080 weight 1
service TCP 198.51.100.1:30080 wrr persistent 10800 mask /24
  -> 10.244.1.2:8080 weight 1
  -> 10.244.1.3:8080 weight 1
set KUBE-6-CLUSTER-IP hash:ip,port family inet6
  fd00:10:96::a,tcp:80
set KUBE-CLUSTER-IP hash:ip,port family inet
  10.96.0.10,tcp:80 comment "default/web:http"
  10.96.0.10,udp:53 comment "default/web:dns"
set KUBE-IPVS-EXCLUDE-CIDRS hash:net family inet
  10.200.0.0/16 comment "excluded"
set KUBE-IPVS-IPS hash:ip family inet
  10.96.0.10
set KUBE-LOAD-BALANCER-SOURCE-CIDR hash:ip,port,net family inet
  203.0.113.7,tcp:80,192.0.2.0/24
set KUBE-LOOP-BACK hash:ip,port,ip family inet
  10.244.1.2,tcp:8080,10.244.1.2
set KUBE-NODE-PORT-TCP bitmap:port
  30080 comment "default/web:http"
`

func opStrings(ops []Op) []string {
	var out []string
	for _, op := range ops {
		out = append(out, op.String())
	}
	return out
}

func mustApply(t *testing.T, f *Fake, s State) Result {
	t.Helper()
	res, err := f.Apply(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestFakeApplyAndDump(t *testing.T) {
	f := NewFake(Options{})
	res := mustApply(t, f, sampleState())
	if got := f.Dump(); got != sampleDump {
		t.Errorf("dump:\n%s\nwant:\n%s", got, sampleDump)
	}
	ops := opStrings(res.Ops)
	for _, want := range []string{
		"create interface",
		"add service TCP 10.96.0.10:80 rr",
		"add real TCP 10.96.0.10:80 -> 10.244.1.2:8080 weight 1",
		"add address 10.96.0.10",
		"create set KUBE-NODE-PORT-TCP bitmap:port",
		`add entry KUBE-CLUSTER-IP 10.96.0.10,tcp:80 comment "default/web:http"`,
	} {
		if !slices.Contains(ops, want) {
			t.Errorf("ops lack %q:\n%s", want, strings.Join(ops, "\n"))
		}
	}
	// Services before the address that leads to them.
	if slices.Index(ops, "add address 10.96.0.10") < slices.Index(ops, "add service TCP 10.96.0.10:80 rr") {
		t.Errorf("address bound before its service:\n%s", strings.Join(ops, "\n"))
	}
	if res := mustApply(t, f, sampleState()); len(res.Ops) != 0 {
		t.Errorf("applying the same state again changed:\n%s", strings.Join(opStrings(res.Ops), "\n"))
	}
}

// TestFakeApplyChangesOnlyTheDifference: each change of the state is
// exactly one change of the kernel.
func TestFakeApplyChangesOnlyTheDifference(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*State)
		want   []string
	}{
		{"weight", func(s *State) { s.Services[0].Reals[1].Weight = 3 },
			[]string{"update real TCP 10.96.0.10:80 -> 10.244.1.3:8080 weight 3"}},
		{"new real", func(s *State) {
			s.Services[0].Reals = append(s.Services[0].Reals, RealServer{Address: podC, Port: 8080, Weight: 1})
		},
			[]string{"add real TCP 10.96.0.10:80 -> 10.244.2.2:8080 weight 1"}},
		{"scheduler", func(s *State) { s.Services[0].Scheduler = "lc" },
			[]string{"update service TCP 10.96.0.10:80 lc"}},
		{"persistence", func(s *State) { s.Services[2].PersistenceMask = 0 },
			[]string{"update service TCP 198.51.100.1:30080 wrr persistent 10800 mask /32"}},
		{"removed service", func(s *State) { s.Services = s.Services[:2] },
			[]string{"delete service TCP 198.51.100.1:30080"}},
		{"removed address", func(s *State) { s.Addresses = nil }, []string{"delete address 10.96.0.10"}},
		{"comment", func(s *State) { s.Sets[1].Entries[0].Comment = "hairpin" },
			[]string{`replace entry KUBE-LOOP-BACK 10.244.1.2,tcp:8080,10.244.1.2 comment "hairpin"`}},
		{"entry", func(s *State) { s.Sets[4].Entries = []Entry{{Port: 30081}} },
			[]string{"add entry KUBE-NODE-PORT-TCP 30081", `delete entry KUBE-NODE-PORT-TCP 30080 comment "default/web:http"`}},
		{"set type", func(s *State) { s.Sets[6].Type = HashNet; s.Sets[6].Entries = nil },
			[]string{"destroy set KUBE-IPVS-IPS hash:ip family inet", "create set KUBE-IPVS-IPS hash:net family inet"}},
		{"removed set", func(s *State) { s.Sets = s.Sets[:6] },
			[]string{"destroy set KUBE-IPVS-IPS hash:ip family inet"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := NewFake(Options{})
			mustApply(t, f, sampleState())
			s := sampleState()
			tc.change(&s)
			res := mustApply(t, f, s)
			if got := opStrings(res.Ops); !slices.Equal(got, tc.want) {
				t.Errorf("ops:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			fresh := NewFake(Options{})
			mustApply(t, fresh, s)
			if f.Dump() != fresh.Dump() {
				t.Errorf("changed kernel:\n%s\nfresh kernel:\n%s", f.Dump(), fresh.Dump())
			}
		})
	}
}

// clock is a settable Options.Now.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestFakeGracefulRemoval(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	f := NewFake(Options{GracePeriod: time.Minute, DrainCheck: 5 * time.Second, Now: c.now})
	s := sampleState()
	mustApply(t, f, s)
	realB := netip.AddrPortFrom(podB, 8080)
	if err := f.SetConnections(TCP, vipPort, realB, 1, 2); err != nil {
		t.Fatal(err)
	}
	s.Services[0].Reals = s.Services[0].Reals[:1] // podB goes
	res := mustApply(t, f, s)
	if got, want := opStrings(res.Ops), []string{"drain real TCP 10.96.0.10:80 -> 10.244.1.3:8080 weight 0"}; !slices.Equal(got, want) {
		t.Fatalf("removing a real server with connections: %q, want %q", got, want)
	}
	if res.Draining != 1 || res.RecheckAfter != 5*time.Second {
		t.Errorf("result %+v, want 1 draining, recheck after 5s", res)
	}
	c.t = c.t.Add(30 * time.Second)
	if res := mustApply(t, f, s); len(res.Ops) != 0 || res.Draining != 1 {
		t.Errorf("still connected, in grace: %+v", res)
	}
	c.t = c.t.Add(28 * time.Second)
	if res := mustApply(t, f, s); res.RecheckAfter != 2*time.Second {
		t.Errorf("recheck after %v, want the 2s left of the grace period", res.RecheckAfter)
	}
	c.t = c.t.Add(2 * time.Second)
	res = mustApply(t, f, s)
	if got, want := opStrings(res.Ops), []string{"delete real TCP 10.96.0.10:80 -> 10.244.1.3:8080 weight 0"}; !slices.Equal(got, want) || res.Draining != 0 {
		t.Errorf("after the grace period: %q, %d draining; want %q", got, res.Draining, want)
	}

	// The connections end before the grace period does.
	s = sampleState()
	mustApply(t, f, s)
	f.SetConnections(TCP, vipPort, realB, 0, 1)
	s.Services[0].Reals = s.Services[0].Reals[:1]
	mustApply(t, f, s)
	f.SetConnections(TCP, vipPort, realB, 0, 0)
	if got := opStrings(mustApply(t, f, s).Ops); len(got) != 1 || !strings.HasPrefix(got[0], "delete real") {
		t.Errorf("drained real server: %q, want it deleted", got)
	}

	// A draining real server that comes back gets its weight back.
	s = sampleState()
	mustApply(t, f, s)
	f.SetConnections(TCP, vipPort, realB, 1, 0)
	s.Services[0].Reals = s.Services[0].Reals[:1]
	mustApply(t, f, s)
	if got := opStrings(mustApply(t, f, sampleState()).Ops); !slices.Equal(got, []string{"update real TCP 10.96.0.10:80 -> 10.244.1.3:8080 weight 1"}) {
		t.Errorf("returning real server: %q", got)
	}
}

// TestFakeRemovalWithoutConnections: a real server with no connections,
// or of a UDP service, goes at once.
func TestFakeRemovalWithoutConnections(t *testing.T) {
	f := NewFake(Options{})
	s := sampleState()
	mustApply(t, f, s)
	f.SetConnections(UDP, netip.AddrPortFrom(vip, 53), netip.AddrPortFrom(podB, 8080), 0, 5)
	s.Services[0].Reals = s.Services[0].Reals[:1]
	s.Services[1].Reals = s.Services[1].Reals[:1]
	res := mustApply(t, f, s)
	want := []string{
		"delete real UDP 10.96.0.10:53 -> 10.244.1.3:8080 weight 1",
		"delete real TCP 10.96.0.10:80 -> 10.244.1.3:8080 weight 1",
	}
	if got := opStrings(res.Ops); !slices.Equal(got, want) || res.Draining != 0 {
		t.Errorf("got %q, %d draining; want %q", got, res.Draining, want)
	}
}

func TestFakeExcludeCIDRs(t *testing.T) {
	f := NewFake(Options{ExcludeCIDRs: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}})
	mustApply(t, f, sampleState())
	res := mustApply(t, f, State{})
	for _, op := range opStrings(res.Ops) {
		if strings.Contains(op, "198.51.100.1:30080") {
			t.Errorf("touched an excluded service: %s", op)
		}
	}
	if !strings.Contains(f.Dump(), "service TCP 198.51.100.1:30080") {
		t.Errorf("excluded service gone:\n%s", f.Dump())
	}
}

// TestValidate: a bad state is refused whole, naming object and field,
// and the kernel is left as it was.
func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		change func(*State)
		want   string
	}{
		{func(s *State) { s.Services[0].Scheduler = "fastest" }, `service TCP 10.96.0.10:80: scheduler "fastest": want one of rr, wrr`},
		{func(s *State) { s.Services[0].Reals[0].Weight = 70000 }, "service TCP 10.96.0.10:80: real server 10.244.1.2:8080: weight 70000"},
		{func(s *State) { s.Services[0].Reals[0].Address = netip.MustParseAddr("fd00::1") }, "real server [fd00::1]:8080: want a plain address of the service's family"},
		{func(s *State) { s.Services = append(s.Services, s.Services[0]) }, "service TCP 10.96.0.10:80: listed twice"},
		{func(s *State) { s.Services[2].PersistenceTimeout = 1500 * time.Millisecond }, "persistence timeout 1.5s"},
		{func(s *State) { s.Services[0].Flags = 0x1 }, "flags 0x1: unknown bits 0x1"},
		{func(s *State) { s.Sets[0].Name = "OTHER-SET" }, `set OTHER-SET: name: want at most 31 bytes, no space or quote, starting with "KUBE-"`},
		{func(s *State) { s.Sets[0].Entries[0].IP = netip.MustParseAddr("fd00::1") }, "set KUBE-CLUSTER-IP: entry fd00::1,tcp:80: want the fields of hash:ip,port"},
		{func(s *State) { s.Sets[3].Entries[0].Net = netip.MustParsePrefix("10.200.0.1/16") }, "set KUBE-IPVS-EXCLUDE-CIDRS: entry 10.200.0.1/16"},
		{func(s *State) { s.Sets[4].Family = IPv4 }, `set KUBE-NODE-PORT-TCP: family "inet": bitmap:port has none`},
		{func(s *State) { s.Sets[0].Entries[0].Comment = `say "hi"` }, "comment: want at most 255 bytes"},
		{func(s *State) { s.Addresses = append(s.Addresses, vip) }, "addresses: 10.96.0.10 is listed twice"},
	} {
		f := NewFake(Options{})
		mustApply(t, f, sampleState())
		before := f.Dump()
		s := sampleState()
		tc.change(&s)
		res, err := f.Apply(context.Background(), s)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want an error with %q", err, tc.want)
		}
		if len(res.Ops) != 0 || f.Dump() != before {
			t.Errorf("a refused state changed the kernel: %q", opStrings(res.Ops))
		}
	}
}

// TestFakeRandomTransitions replays random changes between states: after
// each Apply the kernel is what a fresh Apply of the same state makes, and
// one more Apply changes nothing.
func TestFakeRandomTransitions(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	f := NewFake(Options{})
	for i := range 200 {
		s := randomState(rng)
		mustApply(t, f, s)
		fresh := NewFake(Options{})
		mustApply(t, fresh, s)
		if f.Dump() != fresh.Dump() {
			t.Fatalf("step %d: kernel:\n%s\nfresh:\n%s", i, f.Dump(), fresh.Dump())
		}
		if res := mustApply(t, f, s); len(res.Ops) != 0 {
			t.Fatalf("step %d: applying again: %q", i, opStrings(res.Ops))
		}
	}
}

// randomState picks services, real servers, addresses and sets from small
// pools, so that consecutive states overlap.
func randomState(rng *rand.Rand) State {
	var s State
	for i := range 4 {
		if rng.Intn(3) == 0 {
			continue
		}
		addr := netip.AddrFrom4([4]byte{10, 96, 0, byte(10 + i)})
		realAddr := func(j int) netip.Addr { return netip.AddrFrom4([4]byte{10, 244, 1, byte(2 + j)}) }
		if i == 3 { // one IPv6 service
			addr = netip.MustParseAddr("fd00:10:96::a")
			realAddr = func(j int) netip.Addr {
				return netip.AddrFrom16([16]byte{0xfd, 0, 0, 0x10, 0x2, 0x44, 0, 1, 15: byte(2 + j)})
			}
		}
		s.Addresses = append(s.Addresses, addr)
		vs := VirtualServer{Address: addr, Protocol: []Protocol{TCP, UDP}[rng.Intn(2)], Port: 80,
			Scheduler: Schedulers[rng.Intn(len(Schedulers))]}
		if rng.Intn(3) == 0 {
			vs.PersistenceTimeout = time.Duration(1+rng.Intn(3)) * time.Hour
			vs.PersistenceMask = []int{0, 24, 32}[rng.Intn(3)]
		}
		if vs.Scheduler == "sh" || vs.Scheduler == "mh" {
			vs.Flags = []Flags{0, FlagSched1, FlagSched2, FlagSched1 | FlagSched2}[rng.Intn(4)]
		}
		if vs.Protocol == UDP && rng.Intn(2) == 0 {
			vs.Flags |= FlagOnePacket
		}
		for j := range 4 {
			if rng.Intn(2) == 0 {
				vs.Reals = append(vs.Reals, RealServer{Address: realAddr(j), Port: 8080, Weight: rng.Intn(3)})
			}
		}
		s.Services = append(s.Services, vs)
	}
	for i, set := range sampleSets() {
		if rng.Intn(3) == 0 {
			continue
		}
		set.Entries = slices.DeleteFunc(set.Entries, func(Entry) bool { return rng.Intn(2) == 0 })
		for k := range set.Entries {
			set.Entries[k].Comment = fmt.Sprint([]string{"", "a", "b"}[rng.Intn(3)], i)
		}
		s.Sets = append(s.Sets, set)
	}
	return s
}
