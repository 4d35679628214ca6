# svcproxy. `make demo` shows it working; `make test` runs every test.
# Both install what they need (Debian packages via hack/deps.sh) and run as
# root: the dataplane tests and the demo create their own network namespaces.

GO ?= go
export GOFLAGS ?= -mod=mod

.PHONY: all build demo test bench fuzz deps clean

all: build

build:
	$(GO) build -o bin/svcproxy ./cmd/svcproxy

deps:
	./hack/deps.sh

demo: deps build
	./bin/svcproxy demo

test: deps
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...

# Twice: with Go's default GC, and with the soft memory limit a DaemonSet
# would set from its memory limit (GOMEMLIMIT).
bench: deps build
	./bin/svcproxy bench --services 1000,10000 --endpoints 10 --changes 50
	GOMEMLIMIT=140MiB ./bin/svcproxy bench --services 10000 --endpoints 10 --changes 50

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzBuild -fuzztime 120s ./internal/plan/

clean:
	rm -rf bin
