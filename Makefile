# svcproxy. `make demo` runs the lab's walkthrough; `make test` runs every test.
# Both install what they need (Debian packages via hack/deps.sh) and run as
# root: the dataplane tests and the demo create their own network namespaces.

GO ?= go
export GOFLAGS ?= -mod=mod

.PHONY: all build image image-lock demo lab test bench bench-ipvs bench-api bench-ui screenshot fuzz deps controlplane clean

all: build

PKG := github.com/svcproxy/svcproxy
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
# The time stamped on the image's files and config: the commit's, so that
# the same commit gives the same image digest.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
IMAGE ?= ghcr.io/svcproxy/svcproxy

build:
	$(GO) build -ldflags "-X $(PKG)/internal/version.Version=$(VERSION) -X $(PKG)/internal/version.Commit=$(COMMIT)" -o bin/svcproxy ./cmd/svcproxy

# The container image as an OCI archive, bin/svcproxy-image.tar, built
# without a container daemon from the Debian packages pinned in
# internal/tools/image/debian.lock (fetched with apt-get download).
# `make image-lock` moves the pins to what apt offers now.
image: deps
	$(GO) run ./hack/image --out bin/svcproxy-image.tar --repository $(IMAGE) \
		--version $(VERSION) --commit $(COMMIT) --epoch $(SOURCE_DATE_EPOCH)

image-lock: deps
	$(GO) run ./hack/image --update-lock internal/tools/image/debian.lock

deps:
	./hack/deps.sh

# The control plane for the API tests and the lab (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl, and CoreDNS for the
# lab), built once from the Go module proxy into .cache/.
controlplane:
	./hack/controlplane.sh etcd kube-apiserver kube-controller-manager kube-scheduler kubectl coredns

# The lab: a 3-node cluster of network namespaces with a real control plane
# (built once from the Go module proxy into .cache/), the seeds' two-tier
# walkthrough, then down; its page's address is printed with the ready
# line. `make lab` leaves it (and the page) up afterwards.
demo: deps build
	./bin/svcproxy lab demo

lab: deps build
	./bin/svcproxy lab demo --keep

# Files a failing test keeps for you (the lab page's screenshot) go under
# .test-output/_artifacts/, as its log says.
TEST_OUTPUT := $(CURDIR)/.test-output

test: deps controlplane
	$(GO) vet ./...
	mkdir -p $(TEST_OUTPUT)
	$(GO) test -race -count=1 -timeout 30m -artifacts -outputdir $(TEST_OUTPUT) ./...

# Twice: with Go's default GC, and with the soft memory limit a DaemonSet
# would set from its memory limit (GOMEMLIMIT).
bench: deps build
	./bin/svcproxy bench --services 1000,10000 --endpoints 10 --changes 50
	GOMEMLIMIT=140MiB ./bin/svcproxy bench --services 10000 --endpoints 10 --changes 50

# IPVS beside nftables, in the same kernel: the test VM's (this machine's
# may have no IPVS; see internal/testkit/vm), booted once for both.
bench-ipvs: deps build
	hack/vm/run -v -- ./bin/svcproxy bench --services 1000,10000 --endpoints 10 --changes 20 --dataplane nftables,ipvs

# Network programming latency against a real apiserver: EndpointSlice write
# to change in the kernel, 10,000 Services x 10 endpoints, svcproxy in its
# own process (RSS), with minSyncPeriod 0 and 1 s.
bench-api: deps controlplane build
	./bin/svcproxy bench --api --services 10000 --endpoints 10 --changes 50 --min-sync-periods 0s,1s

# How long the lab's page takes to draw 3 nodes x 30 pods and 100 Services,
# from the browser's performance timing; SVCPROXY_UI_URL=$$(svcproxy lab ui)
# measures a running lab's page instead.
bench-ui: deps
	$(GO) test -run '^$$' -bench PageRender -benchtime 20x ./internal/tools/lab/ui/

# The README's picture of the lab's page (docs/lab-ui.png), taken from a
# real lab by the walkthrough's end-to-end test.
screenshot: deps controlplane
	SVCPROXY_UI_SCREENSHOT=$(CURDIR)/docs/lab-ui.png $(GO) test -count=1 -timeout 20m -run 'TestWalkthrough/nftables' ./internal/tools/lab/walkthrough/

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzBuild -fuzztime 120s ./internal/proxy/plan/

clean:
	rm -rf bin
