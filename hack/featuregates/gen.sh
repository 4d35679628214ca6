#!/bin/sh
# Prints internal/proxy/config/kubegates.go: the feature gates of
# kube-proxy at the pinned Kubernetes version. Runs main.go in a scratch
# copy of the pinned kube module (internal/tools/controlplane/pinned), so
# that the pin exists once; it needs the Go module proxy.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cp "$root/internal/tools/controlplane/pinned/modules/kube.mod" "$dir/go.mod"
cp "$root/internal/tools/controlplane/pinned/modules/kube.sum" "$dir/go.sum"
cp "$root/hack/featuregates/main.go" "$dir/main.go"
cd "$dir"
go mod edit -require=k8s.io/apiserver@v0.36.3 -require=k8s.io/component-base@v0.36.3
GOFLAGS=-mod=mod go run main.go
