#!/usr/bin/env bash
# Builds the control-plane binaries the API tests and the lab run: etcd and
# kube-apiserver by default, or the ones named as arguments (etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, and
# coredns for the lab's cluster DNS).
# Sources come from the Go module proxy at the versions pinned in
# hack/tools/*/go.mod; binaries are cached in .cache/controlplane/ (git-ignored),
# so only the first run builds. Prints the binary directory.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
k8s_version=v1.36.3
etcd_version=v3.6.8
# coredns's version is pinned in hack/tools/coredns/go.mod (v1.14.7).
bin="$root/.cache/controlplane/kubernetes-$k8s_version-etcd-$etcd_version"
mkdir -p "$bin"
export GOFLAGS=-mod=mod

tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=(etcd kube-apiserver)

ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=36"
	ldflags+=" -X $pkg.gitTreeState=clean"
done

for tool in "${tools[@]}"; do
	[ -x "$bin/$tool" ] && continue
	echo "building $tool (first time only; a few minutes)" >&2
	case "$tool" in
	etcd)
		(cd "$root/hack/tools/etcd" && go build -trimpath -ldflags "-s -w" -o "$bin/etcd.tmp" .) ;;
	coredns)
		(cd "$root/hack/tools/coredns" && go build -trimpath -ldflags "-s -w" -o "$bin/coredns.tmp" github.com/coredns/coredns) ;;
	kube-apiserver | kube-controller-manager | kube-scheduler | kubectl)
		(cd "$root/hack/tools/kube" && go build -trimpath -ldflags "$ldflags" -o "$bin/$tool.tmp" "k8s.io/kubernetes/cmd/$tool") ;;
	*)
		echo "controlplane.sh: unknown tool $tool" >&2; exit 2 ;;
	esac
	mv "$bin/$tool.tmp" "$bin/$tool"
done
echo "$bin"
