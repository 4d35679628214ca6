package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/svcproxy/svcproxy/internal/tools/bench"
)

var benchCommand = &command{
	name:     "bench",
	synopsis: "[flags]",
	about: `Measures a dataplane in a throwaway network namespace: cold full sync and
single-endpoint changes at each size, and peak memory, printed as a table.
With --api, measures network programming latency instead: a real
kube-apiserver, svcproxy as its own process, EndpointSlice writes timed to
the kernel.`,
	flags: func(fs *flag.FlagSet) func(context.Context, []string, io.Writer, io.Writer) error {
		sizes := fs.String("services", "1000,10000", "comma-separated numbers of Services")
		eps := fs.Int("endpoints", 10, "endpoints per Service")
		changes := fs.Int("changes", 50, "single-endpoint changes timed per size")
		dps := fs.String("dataplane", "nftables", "comma-separated dataplanes to measure, side by side: "+strings.Join(bench.Dataplanes, ", "))
		sched := fs.String("scheduler", "", "the scheduler every Service chooses (annotation svcproxy.io/scheduler); none by default")
		api := fs.Bool("api", false, "measure network programming latency against a real kube-apiserver instead")
		minSyncs := fs.String("min-sync-periods", "0s,1s", "with --api: the minSyncPeriods to measure")
		return func(ctx context.Context, _ []string, stdout, _ io.Writer) error {
			ns, err := benchSizes(*sizes)
			if err != nil {
				return err
			}
			if !*api {
				return bench.Run(ctx, stdout, bench.Options{Sizes: ns, Endpoints: *eps, Changes: *changes, Dataplanes: strings.Split(*dps, ","), Scheduler: *sched})
			}
			var periods []time.Duration
			for _, s := range strings.Split(*minSyncs, ",") {
				d, err := time.ParseDuration(strings.TrimSpace(s))
				if err != nil {
					return fmt.Errorf("--min-sync-periods: %w", err)
				}
				periods = append(periods, d)
			}
			return bench.RunAPI(ctx, stdout, bench.APIOptions{Services: ns[len(ns)-1], Endpoints: *eps, Changes: *changes, MinSyncPeriods: periods})
		}
	},
}

func benchSizes(list string) ([]int, error) {
	var ns []int
	for _, s := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("--services: bad number %q", s)
		}
		ns = append(ns, n)
	}
	return ns, nil
}
