package manifests

import (
	"strings"
	"testing"
)

func TestDecodeFile(t *testing.T) {
	svc := service("web", 80)
	for _, tc := range []struct {
		name, in string
		keys     []string // the objects kept
		errs     []string // substrings of the error, "" for none
	}{
		{"service and slice", webFile(80, "10.0.0.1"), []string{"Service default/web", "EndpointSlice default/web-1"}, nil},
		{"namespace kept", strings.Replace(svc, "name: web", "name: web\n  namespace: prod", 1), []string{"Service prod/web"}, nil},
		{"json", `{"apiVersion":"v1","kind":"Service","metadata":{"name":"j"},"spec":{"ports":[{"port":53,"protocol":"UDP"}]}}`,
			[]string{"Service default/j"}, nil},
		{"list", "apiVersion: v1\nkind: List\nitems:\n- " + indent(svc) + "- " + indent(slice("web-1", "web", "10.0.0.1")),
			[]string{"Service default/web", "EndpointSlice default/web-1"}, nil},
		{"list item error", "apiVersion: v1\nkind: List\nitems:\n- " + indent(webFileDoc(70000)), nil,
			[]string{"document 1 items[0] (Service default/web): spec.ports[0].port"}},
		{"external name needs no ports", "apiVersion: v1\nkind: Service\nmetadata: {name: ext}\nspec: {type: ExternalName, externalName: example.com}\n",
			[]string{"Service default/ext"}, nil},
		{"ipv6 slice", strings.Replace(slice("s", "web", "fd00::1"), "IPv4", "IPv6", 1), []string{"EndpointSlice default/s"}, nil},
		{"fqdn slice", strings.Replace(slice("s", "web", "db.example.com"), "IPv4", "FQDN", 1), []string{"EndpointSlice default/s"}, nil},
		{"no name", strings.Replace(svc, "name: web", "labels: {}", 1), nil, []string{"document 1 (Service default/): metadata.name: Required value"}},
		{"not an object", "---\njust a string\n", nil, []string{"document 1: not an object"}},
		{"no kind", "apiVersion: v1\nmetadata: {name: x}\n", nil, []string{"document 1: kind: required"}},
		{"nested unknown field", strings.Replace(svc, "clusterIP:", "sessionAffinityConfig: {clientIP: {timeout: 3}}\n  clusterIP:", 1), nil,
			[]string{"document 1 (Service default/web): spec.sessionAffinityConfig.clientIP.timeout: unknown field"}},
		{"type mismatch", strings.Replace(svc, "port: 80", "port: eighty", 1), nil, []string{"document 1 (Service default/web): spec.ports.port: want int32"}},
		{"no ports", strings.Replace(svc, "  ports:\n  - port: 80\n    protocol: TCP\n", "", 1), nil, []string{"spec.ports: Required value: at least one port"}},
		{"protocol", strings.Replace(svc, "TCP", "ICMP", 1), nil, []string{`spec.ports[0].protocol: Unsupported value: "ICMP"`}},
		{"node port", strings.Replace(svc, "protocol: TCP", "nodePort: 99999", 1), nil, []string{"spec.ports[0].nodePort: Invalid value: 99999: must be between 1 and 65535"}},
		{"cluster ip", strings.Replace(svc, "10.96.0.10", "10.96.0.256", 1), nil, []string{`spec.clusterIP: Invalid value: "10.96.0.256": must be a valid IP address`}},
		{"address type", strings.Replace(slice("s", "web", "10.0.0.1"), "IPv4", "IPv5", 1), nil, []string{`document 1 (EndpointSlice default/s): addressType: Unsupported value: "IPv5"`}},
		{"slice port", strings.Replace(slice("s", "web", "10.0.0.1"), "8080", "0", 1), nil, []string{"document 1 (EndpointSlice default/s): ports[0].port: Invalid value: 0: must be between 1 and 65535"}},
		{"unnamed ports", strings.Replace(svc, "protocol: TCP", "protocol: TCP\n  - port: 81", 1), nil, []string{"spec.ports[0].name: Required value: when a Service has several ports"}},
		{"duplicate in file", svc + "---\n" + svc, []string{"Service default/web"},
			[]string{"document 2 (Service default/web): duplicate: Service default/web already defined in document 1"}},
		{"all errors reported", webFile(0, "x"), nil, []string{"document 1 (Service default/web): spec.ports[0].port", "document 2 (EndpointSlice default/web-1): endpoints[0].addresses[0]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs, err := decodeFile("f.yaml", []byte(tc.in))
			var keys []string
			for _, o := range objs {
				keys = append(keys, o.key.String())
			}
			if strings.Join(keys, ",") != strings.Join(tc.keys, ",") {
				t.Errorf("objects %q, want %q", keys, tc.keys)
			}
			if len(tc.errs) == 0 && err != nil {
				t.Errorf("error %v, want none", err)
			}
			for _, want := range tc.errs {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("error %v, want it to hold %q", err, want)
				}
			}
			if err != nil {
				for line := range strings.SplitSeq(err.Error(), "\n") {
					if !strings.HasPrefix(line, "f.yaml: document ") {
						t.Errorf("error line %q does not name the file and document", line)
					}
				}
			}
		})
	}
}

// webFileDoc is the web Service alone with the given port.
func webFileDoc(port int) string { return service("web", port) }

// indent indents a document to be a YAML list item.
func indent(doc string) string {
	return strings.ReplaceAll(strings.TrimSuffix(doc, "\n"), "\n", "\n  ") + "\n"
}

func TestSplitDocuments(t *testing.T) {
	chunks := splitDocuments([]byte("# c\n---\na: 1\n--- # two\n\n---\nb: 2\n---x\n"))
	if len(chunks) != 2 || chunks[0].line != 3 || chunks[1].line != 7 {
		t.Fatalf("chunks %+v", chunks)
	}
	if got := string(chunks[1].text); got != "b: 2\n---x\n" {
		t.Errorf("second chunk %q", got)
	}
}
