# The suite's build, test and lint entry points. `make test` is the README's
# test command and what CI runs.

GO        ?= go
TOOLS_DIR ?= /var/cache/kopsnode-test-tools
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X github.com/kopsnode/agents/pkg/version.Version=$(VERSION) -X github.com/kopsnode/agents/pkg/version.GitCommit=$(COMMIT)
BINARIES  := nodeup protokube etcd-manager etcd-manager-ctl
TEST_TIMEOUT ?= 75m

export TOOLS_DIR

# One build configuration for all that make runs (lint, the tests, the
# binaries, the binaries the tests build, the tools' helpers): static (no
# cgo), -trimpath and no DWARF in the compiled objects. On a cold build
# cache each package is then compiled once instead of once per
# configuration (CI's cold run is most of its time in compiles), and
# each compile skips the DWARF nothing here reads. Nothing in the module
# uses cgo; debug a test with `go test` or dlv directly, outside make.
export CGO_ENABLED := 0
export GOFLAGS := -trimpath -gcflags=all=-dwarf=false $(GOFLAGS)

# Booted-machine runs started by make take this lock, one at a time on the
# machine (a cluster of real Kubernetes machines loads both cores).
E2E_LOCK ?= /tmp/kopsnode-e2e.lock

.PHONY: all build test e2e-ha lint tools bench fuzz demo demo-down demo-scratch clean $(addprefix bin/,$(BINARIES))

all: build

build: $(addprefix bin/,$(BINARIES))

bin/nodeup:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./nodeup/cmd/nodeup
bin/protokube:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./protokube/cmd/protokube
bin/etcd-manager:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./etcd-manager/cmd/etcd-manager
bin/etcd-manager-ctl:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./etcd-manager/cmd/etcd-manager-ctl

# Builds the real parts the tests use into $(TOOLS_DIR), reusing what is cached
# there: MinIO, fake-gcs-server, CoreDNS, etcd per version, the Kubernetes
# commands, containerd, runc, the CNI plugins and the pause, CoreDNS and test
# workload images, listed with their sha256 in $(TOOLS_DIR)/parts.json.
# Cold: about 34 minutes on 2 quiet cores, 66 minutes of CPU time (see
# docs/e2e.md, "Test tools").
tools:
	tools/build-test-tools.sh all

# Every test of the project, with the real servers built by `make tools`.
# The booted-machine tests run after the rest, alone: a cluster of real
# Kubernetes machines loads both cores, and the etcd-manager and gossip
# tests beside it would be measuring the machine, not the code. They take
# the e2e lock, so a demo or another booted-machine run waits its turn.
test: tools build
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) $$($(GO) list ./... | grep -v '/e2e')
	flock $(E2E_LOCK) $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./e2e/...

# The cluster test with three control-plane machines and a worker (CI runs
# one plus one on its 2 cores).
e2e-ha: tools build
	KOPSNODE_E2E_CONTROL_PLANES=3 $(GO) test -count=1 -timeout 60m -run '^TestClusterOnBootedMachines$$' -v ./e2e

lint:
	@out="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Benchmarks that print the figures the issues name. One package at a time
# (-p 1): benchmarks running side by side would measure each other. The
# booted-machine benchmark (boot to Ready: a control-plane machine and a
# worker from baked images, with the phases) runs last, once, under the
# e2e lock; like the e2e tests it needs root.
bench: tools build
	$(GO) test -p 1 -run '^$$' -bench . -benchtime 1x -timeout 30m $$($(GO) list ./... | grep -v '/e2e')
	flock $(E2E_LOCK) $(GO) test -count=1 -run '^$$' -bench '^BenchmarkBootToReady$$' -benchtime 1x -timeout 30m ./e2e/

# A small local cluster of booted machines: one control-plane machine and
# KOPSNODE_DEMO_NODES workers (default 1), booted from userdata as in the
# cluster test, left running with the admin kubeconfig at
# $(DEMO_DIR)/admin.conf until Ctrl-C here or `make demo-down` elsewhere,
# then removed. It first says what it lacks (root, systemd-nspawn, the parts
# of `make tools`). Ctrl-C reaches only the demo (the recipe's shell and
# flock ignore it), so make returns once everything is removed.
DEMO_DIR ?= /tmp/kopsnode-demo
demo:
	@echo "demo: taking the e2e lock $(E2E_LOCK) (waits while another booted-machine run holds it)"
	@trap '' INT; KOPSNODE_DEMO_DIR=$(DEMO_DIR) flock $(E2E_LOCK) $(GO) test -tags demo -count=1 -run '^TestDemo$$' -timeout 0 -v ./e2e/

# Ends a running `make demo` through its pid file (SIGTERM; the demo removes
# its machines, network, volumes, store and mirror) and waits until it has.
demo-down:
	@f=$(DEMO_DIR)/demo.pid; \
	if [ ! -f "$$f" ]; then echo "demo-down: no demo running (no $$f)"; exit 0; fi; \
	pid=$$(cat "$$f"); \
	if ! kill -0 "$$pid" 2>/dev/null || ! grep -qs 'e2e.test' /proc/$$pid/cmdline; then \
	  echo "demo-down: demo process $$pid is gone; removing the stale $$f"; rm -f "$$f"; exit 0; fi; \
	echo "demo-down: asking the demo (pid $$pid) to remove everything"; \
	kill -TERM "$$pid"; \
	while kill -0 "$$pid" 2>/dev/null; do sleep 1; done; \
	echo "demo-down: the demo has ended"

# nodeup's main job on the embedded default (file://) store, against a
# scratch root (no machine, no root needed).
demo-scratch: bin/nodeup
	examples/demo/run.sh

# Short runs of every fuzz target (FUZZTIME each).
FUZZTIME ?= 20s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 2s $$pkg || exit 1; \
	  done; \
	done

clean:
	rm -rf bin
