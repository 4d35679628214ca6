package walkthrough

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// loadPause is the gap between two requests of the load during the
// rolling update (about 20 requests a second).
const loadPause = 50 * time.Millisecond

// rollingUpdate changes the backend's version while the client keeps
// asking the frontend through the load balancer, and counts failures.
func (t *tour) rollingUpdate(ctx context.Context) error {
	t.heading("8. A rolling update of the backend under load: no request fails")
	ip, err := t.ingressIP(ctx)
	if err != nil {
		return err
	}
	url := "http://" + ip + "/"
	t.say("The client asks %s without pause (frontend -> backend-service by name -> backend) while the backend rolls to v2.", url)
	load := t.startLoad(ctx, url)
	start := time.Now()
	err = t.kubectl(ctx, "set", "env", "deployment/backend-deployment", "VERSION=v2")
	if err == nil {
		err = t.kubectl(ctx, "rollout", "status", "deployment/backend-deployment", "--timeout=120s")
	}
	if err == nil {
		err = t.waitPods(ctx, "app=backend", 5) // the old pods' grace periods have ended
	}
	r := load.stop()
	r.Took = time.Since(start)
	t.report.Rollout = r
	t.say("\n%d requests in %v, %d failed; answers by backend version:", r.Requests, r.Took.Round(time.Second), r.Failures)
	t.table(r.Versions)
	if r.Failures > 0 {
		t.say("first failure: %s", r.FirstFailure)
	}
	return err
}

// load sends requests one after another until stopped.
type load struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	r      Rollout
}

func (t *tour) startLoad(ctx context.Context, url string) *load {
	ctx, cancel := context.WithCancel(ctx)
	l := &load{cancel: cancel, done: make(chan struct{}), r: Rollout{Versions: map[string]int{}}}
	go func() {
		defer close(l.done)
		for ctx.Err() == nil {
			a, err := t.getJSON(ctx, t.st.ClientNetns(), url)
			if ctx.Err() != nil {
				return // stopped mid-request: not a failure
			}
			l.count(a, err)
			time.Sleep(loadPause)
		}
	}()
	return l
}

func (l *load) count(a reply, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.r.Requests++
	if err != nil {
		l.r.Failures++
		if l.r.FirstFailure == "" {
			l.r.FirstFailure = fmt.Sprintf("%s: %v", time.Now().Format(time.TimeOnly), err)
		}
		return
	}
	l.r.Versions[a.Backend.Version]++
}

func (l *load) stop() Rollout {
	l.cancel()
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r
}
