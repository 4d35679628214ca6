// Package timescale stretches the bounds put on waiting for a condition
// (a process to become ready, a rule to appear, a request to be answered)
// on a machine much slower than the ones they were chosen on: an emulated
// VM, such as the test VM (package vm), which runs 10 to 20 times slower
// under qemu's TCG. $SVCPROXY_TIME_SCALE, a number of at least 1,
// multiplies every such bound; the test VM sets it. Periods, intervals and
// anything a user configures are never scaled: only how long to wait
// before giving up.
package timescale

import (
	"os"
	"strconv"
	"time"
)

// Env is the variable that holds the factor.
const Env = "SVCPROXY_TIME_SCALE"

// Factor is $SVCPROXY_TIME_SCALE, or 1 if it is unset or not a number of
// at least 1.
func Factor() float64 {
	f, err := strconv.ParseFloat(os.Getenv(Env), 64)
	if err != nil || f < 1 {
		return 1
	}
	return f
}

// Bound is d, a bound on waiting, stretched by Factor.
func Bound(d time.Duration) time.Duration {
	return time.Duration(float64(d) * Factor())
}
