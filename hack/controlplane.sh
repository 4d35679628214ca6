#!/usr/bin/env bash
# Builds the control-plane binaries the API tests and the lab run: etcd and
# kube-apiserver by default, or the ones named as arguments (etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, and
# coredns for the lab's cluster DNS), into .cache/controlplane/ (git-ignored),
# so only the first run builds. Prints the binary directory.
# The versions are pinned in internal/tools/controlplane/pinned/modules/,
# and the build is that package's, the same one a `go install`ed svcproxy
# runs for `svcproxy lab up`.
set -euo pipefail
cd "$(dirname "$0")/.."
GOFLAGS=-mod=mod exec go run ./hack/controlplane "$@"
