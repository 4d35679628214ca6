package workload

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/svcproxy/svcproxy/internal/timescale"
)

// DefaultHTTPPort is where the jobs API listens if its container declares
// no TCP port.
const DefaultHTTPPort = 8080

// BackendTimeout bounds a frontend's call to its backend, DNS included,
// stretched on a slow machine (package timescale): in the emulated test
// VM a connection IPVS holds back for a second (a SYN from a reused client
// port, dropped until the old conntrack entry goes; the client resends it
// after 1 s) could pass 2 s there.
var BackendTimeout = timescale.Bound(2 * time.Second)

// jobTitles are what the backend hands out, as the seeds' jobs-api does.
var jobTitles = []string{
	"Instructor at Learnk8s",
	"Site Reliability Engineer",
	"Platform Engineer",
	"Backend Developer",
	"Network Engineer",
	"Kubernetes Administrator",
	"Cloud Architect",
	"Technical Writer",
}

// JobsAPI is the two-tier demo's image (ghcr.io/learnk8s/jobs-api). It
// serves HTTP on every declared TCP port, or DefaultHTTPPort.
//
// Without a BACKEND_URL variable it is the backend: GET / answers
//
//	{"job":"<title>","pod":"<pod>","client":"<client IP>"}
//
// plus "version" when the VERSION variable is set. With BACKEND_URL it is
// the frontend: GET / calls GET BACKEND_URL/, resolving the host through
// the cluster DNS as a pod would, and answers the backend's job, its own
// pod, the client it saw and, under "backend", the backend's whole answer;
// or 502 with {"error":"..."} if the backend could not be reached.
// GET /healthz answers "ok".
func JobsAPI(ctx context.Context, env Env, ready func()) error {
	env = env.withDefaults()
	api, err := newJobs(env)
	if err != nil {
		return err
	}
	return serveHTTP(ctx, env, httpPorts(env.Ports), api.routes(), ready)
}

// jobs is one container's jobs API.
type jobs struct {
	env    Env
	served atomic.Uint32 // requests answered, to vary the job title
	// backend is the frontend's BACKEND_URL with path "/"; nil for a
	// backend.
	backend *url.URL
	client  *http.Client
}

// answer is the JSON the jobs API sends for GET /.
type answer struct {
	Job     string          `json:"job"`
	Pod     string          `json:"pod"`
	Client  string          `json:"client"`
	Version string          `json:"version,omitempty"`
	Backend json.RawMessage `json:"backend,omitempty"`
}

func newJobs(env Env) (*jobs, error) {
	api := &jobs{env: env}
	raw, ok := env.Vars["BACKEND_URL"]
	if !ok {
		return api, nil
	}
	backend, err := url.Parse(raw)
	if err != nil || backend.Scheme != "http" || backend.Host == "" {
		return nil, fmt.Errorf("BACKEND_URL %q: want http://host:port", raw)
	}
	backend = backend.JoinPath("/")
	api.backend = backend
	api.client = &http.Client{
		Timeout: BackendTimeout,
		Transport: &http.Transport{
			DialContext:       newResolver(env).dialContext,
			DisableKeepAlives: true,
		},
	}
	return api, nil
}

func (j *jobs) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		// Not logged: readiness probes would drown the requests worth reading.
		io.WriteString(w, "ok")
	})
	if j.backend == nil {
		mux.HandleFunc("GET /{$}", j.serveBackend)
	} else {
		mux.HandleFunc("GET /{$}", j.serveFrontend)
	}
	return mux
}

func (j *jobs) serveBackend(w http.ResponseWriter, r *http.Request) {
	a := answer{Job: j.nextJob(), Pod: j.env.Pod, Client: clientIP(r), Version: j.env.Vars["VERSION"]}
	j.env.Logf("GET / from %s -> %s", a.Client, a.Pod)
	writeJSON(w, http.StatusOK, a)
}

func (j *jobs) serveFrontend(w http.ResponseWriter, r *http.Request) {
	client := clientIP(r)
	reply, err := j.callBackend(r.Context())
	if err != nil {
		j.env.Logf("GET / from %s -> %s: 502: %v", client, j.env.Pod, err)
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": err.Error()})
		return
	}
	j.env.Logf("GET / from %s -> %s via %s", client, j.env.Pod, reply.Pod)
	writeJSON(w, http.StatusOK, answer{
		Job: reply.Job, Pod: j.env.Pod, Client: client,
		Version: j.env.Vars["VERSION"], Backend: reply.raw,
	})
}

// backendReply is what the frontend reads of the backend's answer.
type backendReply struct {
	Job, Pod string
	raw      json.RawMessage
}

// callBackend asks the backend for a job. Errors name the backend's URL.
func (j *jobs) callBackend(ctx context.Context) (backendReply, error) {
	var reply backendReply
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.backend.String(), nil)
	if err != nil {
		return reply, err
	}
	resp, err := j.client.Do(req)
	if err != nil {
		return reply, fmt.Errorf("backend: %w", err) // err names method and URL
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	switch {
	case err != nil:
		return reply, fmt.Errorf("backend %s: read answer: %w", j.backend, err)
	case resp.StatusCode != http.StatusOK:
		return reply, fmt.Errorf("backend %s answered %s", j.backend, resp.Status)
	}
	if err := json.Unmarshal(body, &reply); err != nil {
		return reply, fmt.Errorf("backend %s: decode answer: %w", j.backend, err)
	}
	reply.raw = body
	return reply, nil
}

// nextJob picks a job title: the pod's own starting point in the list,
// moved on by one each request.
func (j *jobs) nextJob() string {
	h := fnv.New32a()
	io.WriteString(h, j.env.Pod)
	n := h.Sum32() + j.served.Add(1) - 1
	return jobTitles[n%uint32(len(jobTitles))]
}

// clientIP is the request's source address without the port.
func clientIP(r *http.Request) string {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		return host
	}
	return ap.Addr().Unmap().String()
}

// writeJSON sends v as a line of JSON.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	// An error here means the client has gone: nobody is left to tell.
	_ = json.NewEncoder(w).Encode(v)
}

// httpPorts are the container's TCP ports, or DefaultHTTPPort.
func httpPorts(ports []ContainerPort) []int32 {
	var tcp []int32
	for _, p := range ports {
		if p.Protocol == "" || p.Protocol == "TCP" {
			tcp = append(tcp, p.Port)
		}
	}
	if len(tcp) == 0 {
		return []int32{DefaultHTTPPort}
	}
	return tcp
}
