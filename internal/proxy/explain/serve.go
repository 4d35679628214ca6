package explain

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"strings"

	v1 "k8s.io/api/core/v1"

	"github.com/svcproxy/svcproxy/internal/proxy/plan"
)

// Paths the agent serves next to its metrics.
const (
	StatusPath = "/svcproxy/status"
	DecidePath = "/svcproxy/decide"
)

// Handler serves StatusPath (the Status as JSON) and DecidePath (the
// plan's decision for ?src=IP&dst=IP:PORT&proto=tcp[&fromHost=true]).
func Handler(mode string, withPlan func(fn func(p *plan.Plan, sync SyncStatus))) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(StatusPath, func(w http.ResponseWriter, _ *http.Request) {
		var s Status
		withPlan(func(p *plan.Plan, sync SyncStatus) {
			s = Status{Mode: mode, Sync: sync, Ports: []Port{}}
			if p != nil {
				s.Ports = PortsOf(p)
			}
		})
		writeJSON(w, http.StatusOK, s)
	})
	mux.HandleFunc(DecidePath, func(w http.ResponseWriter, r *http.Request) {
		pkt, err := ParsePacket(r.URL.Query().Get("src"), r.URL.Query().Get("dst"), r.URL.Query().Get("proto"))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		pkt.FromHost = r.URL.Query().Get("fromHost") == "true"
		var d *plan.Decision
		withPlan(func(p *plan.Plan, _ SyncStatus) {
			if p != nil {
				dd := p.Decide(pkt)
				d = &dd
			}
		})
		if d == nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "no sync yet"})
			return
		}
		writeJSON(w, http.StatusOK, d)
	})
	return mux
}

// ParsePacket reads a packet from "IP[:PORT]" (the source port plays no
// part), "IP:PORT" and a protocol name.
func ParsePacket(src, dst, proto string) (plan.Packet, error) {
	var pkt plan.Packet
	if ap, err := netip.ParseAddrPort(src); err == nil {
		pkt.Src = ap.Addr()
	} else if a, err := netip.ParseAddr(src); err == nil {
		pkt.Src = a
	} else {
		return pkt, fmt.Errorf("--src %q: want IP or IP:PORT", src)
	}
	d, err := netip.ParseAddrPort(dst)
	if err != nil {
		return pkt, fmt.Errorf("--dst %q: want IP:PORT ([IPv6]:PORT)", dst)
	}
	pkt.Dst = d
	switch strings.ToUpper(proto) {
	case "", "TCP":
		pkt.Protocol = v1.ProtocolTCP
	case "UDP":
		pkt.Protocol = v1.ProtocolUDP
	case "SCTP":
		pkt.Protocol = v1.ProtocolSCTP
	default:
		return pkt, fmt.Errorf("--proto %q: want tcp, udp or sctp", proto)
	}
	if pkt.Src.Is4() != pkt.Dst.Addr().Is4() {
		return pkt, fmt.Errorf("--src %s and --dst %s are of different IP families", src, dst)
	}
	return pkt, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}
