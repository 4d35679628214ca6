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
	$(GO) test -count=1 ./...

bench: deps build
	./bin/svcproxy bench --services 1000,10000 --endpoints 10 --changes 50

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzBuild -fuzztime 120s ./internal/plan/

clean:
	rm -rf bin
