package kubelet

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/svcproxy/svcproxy/internal/supervise"
)

// execIn returns the Env.Exec of container c: it runs an executable as a
// lab process inside the pod's namespace, logged to <lab>/logs/<name>.log
// and recorded, so that `lab down` stops it even if this kubelet dies. The
// process gets the container's environment.
func (p *pod) execIn(c corev1.Container, vars map[string]string) func(context.Context, string, []string, func()) error {
	name := p.processName(c)
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		env = append(env, k+"="+vars[k])
	}
	return func(ctx context.Context, bin string, args []string, started func()) error {
		c, err := p.k.lab.StartProcess(p.netns, name, env, bin, args...)
		if err != nil {
			return err
		}
		defer p.k.lab.ForgetProcess(name)
		started()
		select {
		case <-c.Done():
			return fmt.Errorf("%s exited (%v); see %s", filepath.Base(bin), c.Err(), filepath.Join(p.k.lab.Dir, "logs", name+".log"))
		case <-ctx.Done():
		}
		return supervise.Stop(stopTimeout-time.Second, c) // tearDown waits stopTimeout
	}
}

// processName names container c's lab process after the pod's namespace
// ("pod-<ns>-<pod>-<container>"), or after its UID when that is too long
// for a file name.
func (p *pod) processName(c corev1.Container) string {
	name := strings.TrimPrefix(p.netns, p.k.lab.Name+"-") + "-" + c.Name
	if len(name) > 200 {
		name = fmt.Sprintf("pod-%s-%s", p.latest.Load().UID, c.Name)
	}
	return name
}
