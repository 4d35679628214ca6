package walkthrough

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/svcproxy/svcproxy/internal/proxy/dataplane/nftables"
	"github.com/svcproxy/svcproxy/internal/tools/lab"
)

// serviceRules returns what svcproxy programmed on the first node for one
// Service: in iptables mode the nat rules naming it; in nftables mode its
// own chains (named with the hash that starts its chains' names), the
// shared chains they jump to, and the elements of shared sets and maps
// that name it or hold its addresses or node ports; in ipvs mode its
// virtual servers, as ipvsadm lists them, and its addresses on kube-ipvs0.
func serviceRules(ctx context.Context, st *lab.State, svc *corev1.Service) (string, error) {
	node := st.Nodes[0].Netns
	name := svc.Namespace + "/" + svc.Name
	switch st.ProxyMode {
	case "ipvs":
		return ipvsRules(ctx, node, svc)
	case "iptables":
		out, err := lab.Command(ctx, node, "iptables-save", "-t", "nat").CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("iptables-save in %s: %w: %s", node, err, out)
		}
		return "$ svcproxy lab exec node1 -- iptables-save -t nat | grep " + name + "   (in the order packets meet them)\n" +
			byChainOrder(grepLines(string(out), name)), nil
	}
	out, err := lab.Command(ctx, node, "nft", "list", "table", "ip", "svcproxy").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("nft list table in %s: %w: %s", node, err, out)
	}
	parts, err := nftService(string(out), name, serviceKeys(svc))
	if err != nil {
		return "", fmt.Errorf("nft list table in %s: %w", node, err)
	}
	return "$ svcproxy lab exec node1 -- nft list table ip svcproxy   (the parts for " + name + ")\n" + parts, nil
}

// serviceKeys are the element prefixes that belong to svc: its addresses
// ("10.96.5.81 . ") and node ports ("32073 . ").
func serviceKeys(svc *corev1.Service) []string {
	var keys []string
	for _, ip := range svc.Spec.ClusterIPs {
		keys = append(keys, ip+" . ")
	}
	for _, in := range svc.Status.LoadBalancer.Ingress {
		keys = append(keys, in.IP+" . ")
	}
	for _, p := range svc.Spec.Ports {
		if p.NodePort != 0 {
			keys = append(keys, strconv.Itoa(int(p.NodePort))+" . ")
		}
	}
	return keys
}

// grepLines keeps the lines containing s.
func grepLines(text, s string) string {
	var keep []string
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, s) {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "\n")
}

// chainOrder ranks kube-proxy's chains in the order a packet meets them.
var chainOrder = []string{"-A KUBE-SERVICES", "-A KUBE-NODEPORTS", "-A KUBE-EXT-", "-A KUBE-SVL-", "-A KUBE-SVC-", "-A KUBE-FW-", "-A KUBE-SEP-"}

// byChainOrder sorts iptables-save lines by chainOrder, keeping the order
// of the rules within a chain.
func byChainOrder(lines string) string {
	ls := strings.Split(lines, "\n")
	rank := func(l string) int {
		for i, p := range chainOrder {
			if strings.HasPrefix(l, p) {
				return i
			}
		}
		return len(chainOrder)
	}
	slices.SortStableFunc(ls, func(a, b string) int { return rank(a) - rank(b) })
	return strings.Join(ls, "\n")
}

var jumpTarget = regexp.MustCompile(`(?:goto|jump) (\S+)`)

// nftService keeps the parts of a listing that concern one Service: its
// own chains and the chains they jump to, whole, and the elements of other
// sets and maps that name it or start with one of keys.
func nftService(listing, name string, keys []string) (string, error) {
	l, err := nftables.ParseListing(listing)
	if err != nil {
		return "", err
	}
	var out []string
	for _, t := range l.Tables {
		own := ownBlocks(t.Objects, name)
		for _, o := range t.Objects {
			if own[o.Name] {
				out = append(out, o.Render(o.Elements)...)
				continue
			}
			var mine []string
			for _, e := range o.Elements {
				if strings.Contains(e, `"`+name+":") || hasPrefixAny(e, keys) {
					mine = append(mine, e)
				}
			}
			if len(mine) > 0 {
				out = append(out, o.Render(mine)...)
			}
		}
	}
	return strings.Join(out, "\n"), nil
}

// ownBlocks names the Service's own chains (those whose names hold
// "-<namespace>/<name>/", and those sharing their hash) and the chains
// they jump to.
func ownBlocks(objects []*nftables.ListedObject, name string) map[string]bool {
	var hashes []string
	for _, o := range objects {
		if strings.Contains(o.Name, "-"+name+"/") {
			_, rest, _ := strings.Cut(o.Name, "-")
			if h, _, ok := strings.Cut(rest, "-"); ok {
				hashes = append(hashes, h)
			}
		}
	}
	own := map[string]bool{}
	for _, o := range objects {
		if slices.ContainsFunc(hashes, func(h string) bool { return strings.Contains(o.Name, "-"+h+"-") }) {
			own[o.Name] = true
			for _, line := range o.Lines {
				for _, m := range jumpTarget.FindAllStringSubmatch(line, -1) {
					own[m[1]] = true
				}
			}
		}
	}
	return own
}

func hasPrefixAny(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// ipvsRules shows the Service's IPVS virtual servers on node, with their
// real servers, and the kube-ipvs0 addresses that make the node accept
// its ClusterIPs: the view a reader of the seeds gets from ipvsadm.
func ipvsRules(ctx context.Context, node string, svc *corev1.Service) (string, error) {
	out, err := lab.Command(ctx, node, "ipvsadm", "-Ln").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("ipvsadm -Ln in %s: %w: %s", node, err, out)
	}
	addrs, err := lab.Command(ctx, node, "ip", "-o", "address", "show", "dev", "kube-ipvs0").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("ip address show dev kube-ipvs0 in %s: %w: %s", node, err, addrs)
	}
	var bound []string
	for _, ip := range svc.Spec.ClusterIPs {
		bound = append(bound, grepLines(string(addrs), " "+ip+"/"))
	}
	name := svc.Namespace + "/" + svc.Name
	return "$ svcproxy lab exec node1 -- ipvsadm -Ln   (the virtual servers of " + name + ")\n" +
		ipvsadmBlocks(string(out), ipvsKeys(svc)) + "\n" +
		"$ svcproxy lab exec node1 -- ip -o address show dev kube-ipvs0   (its addresses)\n" +
		strings.Join(bound, "\n"), nil
}

// ipvsKeys are the virtual servers' addresses that belong to svc, as
// ipvsadm -Ln writes them ("10.96.5.81:3000", "[fd00:10:96::5]:3000"), and
// its node ports (":32073", any address).
func ipvsKeys(svc *corev1.Service) []string {
	var ips []string
	ips = append(ips, svc.Spec.ClusterIPs...)
	ips = append(ips, svc.Spec.ExternalIPs...)
	for _, in := range svc.Status.LoadBalancer.Ingress {
		ips = append(ips, in.IP)
	}
	var keys []string
	for _, p := range svc.Spec.Ports {
		for _, ip := range ips {
			if addr, err := netip.ParseAddr(ip); err == nil {
				keys = append(keys, netip.AddrPortFrom(addr, uint16(p.Port)).String())
			}
		}
		if p.NodePort != 0 {
			keys = append(keys, ":"+strconv.Itoa(int(p.NodePort)))
		}
	}
	return keys
}

// ipvsadmBlocks keeps, of an ipvsadm -Ln listing, its heading and the
// virtual servers (each with its real servers) whose address is one of
// keys or ends with one ("TCP  10.96.5.81:3000 rr" and its "  -> ..." lines).
func ipvsadmBlocks(listing string, keys []string) string {
	var out []string
	keep := false
	for i, line := range strings.Split(strings.TrimRight(listing, "\n"), "\n") {
		f := strings.Fields(line)
		switch {
		case i < 3: // version, then the two column headings
			out = append(out, line)
			continue
		case len(f) >= 2 && f[0] != "->":
			keep = slices.ContainsFunc(keys, func(k string) bool { return f[1] == k || strings.HasPrefix(k, ":") && strings.HasSuffix(f[1], k) })
		}
		if keep {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
