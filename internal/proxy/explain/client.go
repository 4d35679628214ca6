package explain

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/svcproxy/svcproxy/internal/netwire"
	"github.com/svcproxy/svcproxy/internal/nsrun"
	"github.com/svcproxy/svcproxy/internal/proxy/dataplane/ipvs"
	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// Node is a node whose running svcproxy is asked: its metrics server
// address and, for a node that is a named network namespace (the lab's),
// that namespace.
type Node struct {
	Netns   string // "" for the current one
	Metrics string // host:port of the metrics server, 127.0.0.1:10249 by default
}

// Status asks the agent for its status; on an IPVS node it adds each
// port's virtual servers, read from the kernel over netlink.
func (n Node) Status(ctx context.Context) (*Status, error) {
	var s Status
	if err := n.getJSON(ctx, StatusPath, &s); err != nil || s.Mode != "ipvs" {
		return &s, err
	}
	state, err := n.ipvsState(ctx)
	if err != nil {
		return &s, fmt.Errorf("reading IPVS over netlink: %w", err)
	}
	s.addIPVS(state)
	return &s, nil
}

// Trace asks the agent for the plan's decision about pkt, then walks pkt
// through the node's kernel rules.
func (n Node) Trace(ctx context.Context, pkt plan.Packet) (*Result, error) {
	mode, err := n.get(ctx, "/proxyMode")
	if err != nil {
		return nil, err
	}
	q := url.Values{"src": {pkt.Src.String()}, "dst": {pkt.Dst.String()}, "proto": {string(pkt.Protocol)}}
	if pkt.FromHost {
		q.Set("fromHost", "true")
	}
	var planned plan.Decision
	if err := n.getJSON(ctx, DecidePath+"?"+q.Encode(), &planned); err != nil {
		return nil, err
	}
	local, err := n.addresses()
	if err != nil {
		return nil, err
	}
	return Trace(ctx, strings.TrimSpace(mode), Kernel{Run: n.run, IPVS: n.ipvsState}, local, pkt, planned)
}

// ipvsState reads the node's IPVS state over netlink, in its namespace.
func (n Node) ipvsState(ctx context.Context) (ipvs.State, error) {
	var opts ipvs.Options
	if n.Netns != "" {
		opts.NetNS = filepath.Join(netwire.Dir, n.Netns)
	}
	k := ipvs.NewNetlink(opts)
	defer k.Close()
	return k.Read(ctx)
}

// run runs a command on the node.
func (n Node) run(ctx context.Context, argv ...string) (string, error) {
	if n.Netns != "" {
		argv = append([]string{"ip", "netns", "exec", n.Netns}, argv...)
	}
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
	}
	return string(out), nil
}

// addresses lists the node's addresses, for the rules' "local" tests.
func (n Node) addresses() ([]netip.Addr, error) {
	var addrs []net.Addr
	list := func() (err error) { addrs, err = net.InterfaceAddrs(); return err }
	var err error
	if n.Netns != "" {
		err = nsrun.Do(n.Netns, list)
	} else {
		err = list()
	}
	var out []netip.Addr
	for _, a := range addrs {
		if p, perr := netip.ParsePrefix(a.String()); perr == nil {
			out = append(out, p.Addr())
		}
	}
	return out, err
}

// get fetches a path from the metrics server.
func (n Node) get(ctx context.Context, path string) (string, error) {
	addr := n.Metrics
	if addr == "" {
		addr = "127.0.0.1:10249"
	}
	code, body, err := nsrun.Get(ctx, n.Netns, "http://"+addr+path, 5*time.Second)
	if err != nil {
		return "", fmt.Errorf("asking svcproxy at %s (is it running, with this metrics address?): %w", addr, err)
	}
	if code != http.StatusOK {
		return "", fmt.Errorf("svcproxy at %s: %d %s: %s", addr, code, http.StatusText(code), strings.TrimSpace(string(body)))
	}
	return string(body), nil
}

func (n Node) getJSON(ctx context.Context, path string, v any) error {
	body, err := n.get(ctx, path)
	if err != nil {
		return err
	}
	return json.Unmarshal([]byte(body), v)
}
