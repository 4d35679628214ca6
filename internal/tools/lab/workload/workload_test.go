package workload

import (
	"context"
	"reflect"
	"slices"
	"testing"
)

func TestImages(t *testing.T) {
	pick := Images("/bin/coredns")
	for _, tc := range []struct {
		ref   string
		want  string // "JobsAPI" or the executable run
		known bool
	}{
		{"ghcr.io/learnk8s/jobs-api", "JobsAPI", true},
		{"ghcr.io/learnk8s/jobs-api:v2", "JobsAPI", true},
		{"ghcr.io/learnk8s/jobs-api@sha256:0123abcd", "JobsAPI", true},
		{"localhost:5000/jobs-api", "JobsAPI", true},
		{"registry.k8s.io/coredns/coredns:v1.14.7", "/bin/coredns", true},
		{"coredns/coredns", "/bin/coredns", true},
		{"registry.k8s.io/CoreDNS/CoreDNS:v1.14.7", "/bin/coredns", true},
		{"nginx:1.27", "JobsAPI", false},
		{"ghcr.io/learnk8s/jobs-api-tests", "JobsAPI", false},
		{"registry:5000/coredns-jobs-api:coredns", "JobsAPI", true}, // the tag is not the repository
		{"registry.local:5000/app:coredns", "JobsAPI", false},
		{"", "JobsAPI", false},
	} {
		run, known := pick(tc.ref)
		if got := programName(run); known != tc.known || got != tc.want {
			t.Errorf("Images(%q) = %s, %v; want %s, %v", tc.ref, got, known, tc.want, tc.known)
		}
	}
}

// programName is "JobsAPI", or the executable a Command runs (asked
// through a fake Exec).
func programName(p Program) string {
	if reflect.ValueOf(p).Pointer() == reflect.ValueOf(JobsAPI).Pointer() {
		return "JobsAPI"
	}
	var bin string
	p(context.Background(), Env{Exec: func(_ context.Context, b string, _ []string, _ func()) error {
		bin = b
		return nil
	}}, nil)
	return bin
}

func TestCommandRunsTheContainersArgs(t *testing.T) {
	var got []string
	started := false
	env := Env{Args: []string{"-conf", "/etc/coredns/Corefile"}, Exec: func(_ context.Context, bin string, args []string, ready func()) error {
		got = append([]string{bin}, args...)
		ready()
		return nil
	}}
	if err := Command("/bin/coredns")(t.Context(), env, func() { started = true }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{"/bin/coredns", "-conf", "/etc/coredns/Corefile"}) || !started {
		t.Errorf("ran %v, started %v", got, started)
	}
	if err := Command("/bin/coredns")(t.Context(), Env{}, nil); err == nil {
		t.Error("Command without Exec succeeded")
	}
}
