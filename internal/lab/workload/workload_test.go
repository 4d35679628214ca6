package workload

import (
	"reflect"
	"testing"
)

func TestImage(t *testing.T) {
	for _, tc := range []struct {
		ref   string
		want  Program
		known bool
	}{
		{"ghcr.io/learnk8s/jobs-api", JobsAPI, true},
		{"ghcr.io/learnk8s/jobs-api:v2", JobsAPI, true},
		{"ghcr.io/learnk8s/jobs-api@sha256:0123abcd", JobsAPI, true},
		{"localhost:5000/jobs-api", JobsAPI, true},
		{"registry.k8s.io/coredns/coredns:v1.12.0", ClusterDNS, true},
		{"coredns/coredns", ClusterDNS, true},
		{"registry.k8s.io/CoreDNS/CoreDNS:v1.12.0", ClusterDNS, true},
		{"nginx:1.27", JobsAPI, false},
		{"ghcr.io/learnk8s/jobs-api-tests", JobsAPI, false},
		{"registry:5000/coredns-jobs-api:coredns", JobsAPI, true}, // the tag is not the repository
		{"registry.local:5000/app:coredns", JobsAPI, false},
		{"", JobsAPI, false},
	} {
		run, known := Image(tc.ref)
		if known != tc.known || !sameFunc(run, tc.want) {
			t.Errorf("Image(%q) = %s, %v; want %s, %v", tc.ref, funcName(run), known, funcName(tc.want), tc.known)
		}
	}
}

func sameFunc(a, b Program) bool {
	return reflect.ValueOf(a).Pointer() == reflect.ValueOf(b).Pointer()
}

func funcName(p Program) string {
	if sameFunc(p, JobsAPI) {
		return "JobsAPI"
	}
	if sameFunc(p, ClusterDNS) {
		return "ClusterDNS"
	}
	return "another program"
}
