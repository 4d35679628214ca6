package ui

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestTraceQuestions: the page's trace question becomes the packet and the
// node it reaches first, and a bad question gets an error naming what is
// wrong.
func TestTraceQuestions(t *testing.T) {
	c := newCluster(t, 3, 4, 10)
	base, _ := c.serve(t)
	waitSnapshot(t, base)
	for _, q := range []struct {
		src, dst, via    string
		wantNode, packet string
		wantErr          string
	}{
		{"client", "198.51.100.2:30005", "", "node2", "tcp 198.51.100.100 -> 198.51.100.2:30005", ""},
		{"client", "203.0.113.1:80", "", "node1", "tcp 198.51.100.100 -> 203.0.113.1:80", ""}, // as the load balancer routes it
		{"client", "203.0.113.1:80", "node3", "node3", "tcp 198.51.100.100 -> 203.0.113.1:80", ""},
		{"client", "[2001:db8:1::3]:30005", "", "node3", "tcp 2001:db8:1::100 -> [2001:db8:1::3]:30005", ""},
		{"node:node3", "10.96.0.25:80", "", "node3", "tcp 198.51.100.3 (this node) -> 10.96.0.25:80", ""},
		{"pod:default/app02-deployment-5c9f7d6b4-node2", "10.96.0.25:80", "", "node2", "tcp 10.244.2.4 -> 10.96.0.25:80", ""},
		{"client", "10.96.0.25:80", "", "", "", "no route to 10.96.0.25 through a node"},
		{"client", "203.0.113.1:80", "node9", "", "", `via "node9": no such node`},
		{"node:node9", "10.96.0.25:80", "", "", "", `no node "node9"`},
		{"pod:default/nope", "10.96.0.25:80", "", "", "", `source pod default/nope`},
		{"pod:nope", "10.96.0.25:80", "", "", "", "want NAMESPACE/NAME"},
		{"printer", "10.96.0.25:80", "", "", "", "want client, node:NAME or pod:NAMESPACE/NAME"},
		{"client", "10.96.0.25", "", "", "", `destination "10.96.0.25": want IP:PORT`},
	} {
		v := url.Values{"src": {q.src}, "dst": {q.dst}, "proto": {"TCP"}, "via": {q.via}}
		code, body := get(t, base+"api/trace?"+v.Encode(), "")
		var a TraceAnswer
		if err := json.Unmarshal([]byte(body), &a); err != nil {
			t.Fatalf("%v: %d %s", q, code, body)
		}
		switch {
		case q.wantErr != "" && (code != http.StatusBadRequest || !strings.Contains(a.Error, q.wantErr)):
			t.Errorf("%s to %s via %q: %d %q, want 400 %q", q.src, q.dst, q.via, code, a.Error, q.wantErr)
		case q.wantErr == "" && (code != http.StatusOK || a.Node != q.wantNode || a.Result == nil || a.Result.Packet != q.packet):
			t.Errorf("%s to %s via %q: %d %s, want node %s, packet %q", q.src, q.dst, q.via, code, body, q.wantNode, q.packet)
		}
	}
}

// TestOnlyLoopbackNames: a request by another host name (a page elsewhere
// whose name resolves to 127.0.0.1) is refused.
func TestOnlyLoopbackNames(t *testing.T) {
	base, _ := newCluster(t, 1, 1, 1).serve(t)
	for host, want := range map[string]int{"": 200, "localhost": 200, "evil.example": http.StatusMisdirectedRequest} {
		if code, _ := get(t, base, host); code != want {
			t.Errorf("Host %q: %d, want %d", host, code, want)
		}
	}
}

// waitSnapshot waits for the server's first snapshot: the load balancer's
// routes are known from then on.
func waitSnapshot(t *testing.T, base string) {
	t.Helper()
	for range 100 {
		if code, _ := get(t, base+"api/snapshot", ""); code == http.StatusOK {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("no snapshot after 5 s")
}

func get(t *testing.T, url, host string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}
