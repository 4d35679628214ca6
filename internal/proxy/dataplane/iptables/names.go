package iptables

import (
	"crypto/sha256"
	"encoding/base32"
	"strings"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// The fixed chains, named as kube-proxy names them so the usual
// troubleshooting commands work.
const (
	chainServices         = "KUBE-SERVICES"
	chainNodePorts        = "KUBE-NODEPORTS"
	chainPostrouting      = "KUBE-POSTROUTING"
	chainMarkMasq         = "KUBE-MARK-MASQ"
	chainExternalServices = "KUBE-EXTERNAL-SERVICES"
	chainForward          = "KUBE-FORWARD"
	chainFirewall         = "KUBE-PROXY-FIREWALL"
	// chainLocalnetFirewall is kube-proxy's (once the kubelet's) filter
	// chain dropping martian packets to 127.0.0.0/8. Not owned: like
	// kube-proxy, svcproxy never deletes it, because route_localnet=1
	// stays set once written and the chain is what keeps it safe.
	chainLocalnetFirewall = "KUBE-FIREWALL"
)

// Prefixes of the per-service-port chains.
const (
	prefixSVC = "KUBE-SVC-"
	prefixSVL = "KUBE-SVL-"
	prefixEXT = "KUBE-EXT-"
	prefixFW  = "KUBE-FW-"
	prefixSEP = "KUBE-SEP-"
)

var fixedChains = map[string]bool{
	chainServices: true, chainNodePorts: true, chainPostrouting: true, chainMarkMasq: true,
	chainExternalServices: true, chainForward: true, chainFirewall: true,
}

// owned reports whether a chain name is one this dataplane writes.
func owned(chain string) bool {
	if fixedChains[chain] {
		return true
	}
	for _, p := range []string{prefixSVC, prefixSVL, prefixEXT, prefixFW, prefixSEP} {
		if strings.HasPrefix(chain, p) {
			return true
		}
	}
	return false
}

// hashName is prefix + the first 16 characters of base32(sha256(parts)),
// kube-proxy's scheme, so names are stable across restarts and equal to
// kube-proxy's for the same service port.
func hashName(prefix string, parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "")))
	return prefix + base32.StdEncoding.EncodeToString(sum[:])[:16]
}

func protoLower(k plan.Key) string { return strings.ToLower(string(k.Protocol)) }

// portChain names a per-service-port chain.
func portChain(prefix string, k plan.Key) string {
	return hashName(prefix, k.ServicePortName.String(), protoLower(k))
}

// sepChain names the chain of one endpoint of a service port.
func sepChain(k plan.Key, ep string) string {
	return hashName(prefixSEP, k.ServicePortName.String(), protoLower(k), ep)
}

// comment returns a quoted --comment argument. Characters that could end
// the quote or escape it, and unprintable ones, become '?', so a name from
// the API never reaches a rule unescaped; the kernel's limit of 255 bytes
// is kept.
func comment(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '\'' || c == '`' {
			b[i] = '?'
		}
	}
	if len(b) > 255 {
		b = b[:255]
	}
	return `-m comment --comment "` + string(b) + `"`
}
