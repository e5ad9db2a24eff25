# sandkey: `make run` starts a gateway with a demo sandbox; `make test` runs
# every test. Both work on a fresh Debian machine with Go installed.

GO        ?= go
BIN       := bin
PKGS      := ./...
GOBIN     := $(shell $(GO) env GOPATH)/bin
STATICCHECK_VERSION := v0.8.2
# Benchmarks repeat this often so benchstat can compare runs (it needs five).
BENCH_COUNT ?= 5
# The whole suite must stay well under CI's budget.
TEST_TIMEOUT ?= 25m

.PHONY: all build test bench bench-report soak k8s-soak run lint proto fuzz clean images vm-image

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(BIN)/ ./cmd/...

# The Kubernetes tests run a real kube-apiserver, kubelet and etcd:
# scripts/kube-tools.sh builds them once per machine (~30 min cold, a no-op
# after; it says when it builds) and prints their directory, which the
# tests find through SANDKEY_KUBE_BIN (see pkg/driver/kubetest).
test:
	./scripts/test-deps.sh
	./scripts/engine-deps.sh
	./scripts/vm-deps.sh
	@kube_bin=$$(./scripts/kube-tools.sh) || { echo "make test: scripts/kube-tools.sh failed to build the Kubernetes test binaries"; exit 1; }; \
	  echo "SANDKEY_KUBE_BIN=$$kube_bin"; \
	  SANDKEY_KUBE_BIN=$$kube_bin $(GO) test -race -timeout $(TEST_TIMEOUT) $(PKGS)

# client-go's cached file token source re-reads every 50 s: one ~50 s
# sample per run, nearly all of it asleep. make bench starts it first and
# runs it beside the others (its figure is seconds, which their load does
# not move), so that its minutes cost nothing.
BENCH_SLOW       := BenchmarkReferenceClientGoCachedFileTokenSource
BENCH_SLOW_COUNT ?= 3
# Benchmarks whose every iteration is a whole setup the timer skips (a
# gateway's start after an outage; a supervisor's registration, whose
# session takes ~10 ms to end): left to -benchtime's one second of timing,
# they repeat it for minutes. One iteration per sample for the first, a
# fixed number for the second (its p99 needs a few hundred).
BENCH_ONCE        := ^BenchmarkRecovery$$
BENCH_FIXED       := ^BenchmarkRegistrationToFreshToken$$
BENCH_FIXED_TIMES ?= 300x
SOAK_DURATION  ?= 10m
SOAK_SANDBOXES ?= 50

# Every benchmark (-p 1: one package's binary at a time, nothing compiling
# beside it), raw results in bench/results.txt, the report in bench/REPORT.md.
# Every figure gets BENCH_COUNT samples (benchstat needs five), but the
# reference BENCH_SLOW, which gets BENCH_SLOW_COUNT.
bench:
	mkdir -p bench
	@kube_bin=$$(./scripts/kube-tools.sh) || { echo "make bench: scripts/kube-tools.sh failed to build the Kubernetes test binaries"; exit 1; }; \
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(GO) test -c -o "$$tmp/source.test" ./pkg/auth/source || exit 1; \
	{ (cd pkg/auth/source && "$$tmp/source.test" -test.run '^$$' -test.bench '$(BENCH_SLOW)' -test.benchtime 1x -test.count $(BENCH_SLOW_COUNT) -test.timeout 20m) > "$$tmp/slow.txt" 2>&1 & slow=$$!; \
	  SANDKEY_KUBE_BIN=$$kube_bin SANDKEY_BENCH_LARGE=1 $(GO) test -run '^$$' -bench . -skip '$(BENCH_SLOW)|$(BENCH_ONCE)|$(BENCH_FIXED)' -p 1 -benchmem -count $(BENCH_COUNT) -timeout 60m $(PKGS); \
	  SANDKEY_BENCH_LARGE=1 $(GO) test -run '^$$' -bench '$(BENCH_ONCE)' -benchtime 1x -benchmem -count $(BENCH_COUNT) -timeout 30m ./pkg/gateway; \
	  $(GO) test -run '^$$' -bench '$(BENCH_FIXED)' -benchtime $(BENCH_FIXED_TIMES) -benchmem -count $(BENCH_COUNT) -timeout 30m ./pkg/session; \
	  wait $$slow; cat "$$tmp/slow.txt"; } | tee bench/results.txt
	$(MAKE) bench-report
	@! grep -q '^FAIL' bench/results.txt || { echo "make bench: some benchmarks failed; see bench/results.txt"; exit 1; }

# Regenerates bench/REPORT.md from bench/results.txt.
bench-report:
	$(GO) run ./cmd/benchreport bench/results.txt > bench/REPORT.md.tmp
	mv bench/REPORT.md.tmp bench/REPORT.md

# The soak: SOAK_SANDBOXES sandboxes under seeded chaos for SOAK_DURATION;
# figures in bench/SOAK.md. `make test` runs a short one.
# SOAK_MODE=replicas: three gateway replicas on one Postgres with
# Kubernetes sandboxes (test/replicas), the chaos adding leader kills,
# replica kills and database restarts; figures in bench/SOAK-replicas.md.
# Not part of `make test`.
SOAK_MODE ?= single
SOAK_REPLICAS_SANDBOXES ?= 12
soak:
	mkdir -p bench
ifeq ($(SOAK_MODE),replicas)
	@kube_bin=$$(./scripts/kube-tools.sh) || { echo "make soak: scripts/kube-tools.sh failed to build the Kubernetes test binaries"; exit 1; }; \
	  SANDKEY_KUBE_BIN=$$kube_bin SANDKEY_SOAK_MODE=replicas SANDKEY_SOAK_DURATION=$(SOAK_DURATION) \
	  SANDKEY_SOAK_SANDBOXES=$(SOAK_REPLICAS_SANDBOXES) SANDKEY_SOAK_REPORT=$(CURDIR)/bench/SOAK-replicas.md \
	  $(GO) test -count=1 -v -run '^TestSoakReplicas' -timeout 60m ./test/replicas
else ifeq ($(SOAK_MODE),single)
	SANDKEY_SOAK_DURATION=$(SOAK_DURATION) SANDKEY_SOAK_SANDBOXES=$(SOAK_SANDBOXES) SANDKEY_SOAK_REPORT=$(CURDIR)/bench/SOAK.md \
		$(GO) test -count=1 -v -run '^TestSoak' -timeout 60m ./test/soak
else
	@echo "make soak: SOAK_MODE=$(SOAK_MODE): want single (the default) or replicas"; exit 2
endif

# The Kubernetes soak: the kubelet's own renewal of a projected token
# (~9 min with the API's 600 s minimum) reaches the next exchange.
k8s-soak:
	@kube_bin=$$(./scripts/kube-tools.sh) || { echo "make k8s-soak: scripts/kube-tools.sh failed"; exit 1; }; \
	  SANDKEY_KUBE_BIN=$$kube_bin SANDKEY_K8S_SOAK=1 $(GO) test -count=1 -v -run '^TestKubeletRotation' -timeout 30m ./test/k8se2e

run: build
	./$(BIN)/gateway serve --demo --log-format console

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet $(PKGS)
	@command -v staticcheck >/dev/null || test -x $(GOBIN)/staticcheck || $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	PATH="$$PATH:$(GOBIN)" staticcheck $(PKGS)

proto:
	./scripts/gen-proto.sh

# The microVM guest image (kernel + initramfs holding the supervisor) in bin/vm.
vm-image:
	./scripts/vm-deps.sh
	./images/vm/build.sh $(BIN)/vm

# The sandbox base image (sandkey-base:latest) and the gateway's
# (sandkey-gateway:latest, for deploy/kubernetes), with whichever engine answers.
images:
	GO=$(GO) ./images/build.sh base
	GO=$(GO) ./images/build.sh gateway

# Short fuzzing of every parser; `make test` already runs their seed corpora.
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzVerify -fuzztime $(FUZZTIME) ./pkg/auth
	$(GO) test -run '^$$' -fuzz FuzzParseJWKS -fuzztime $(FUZZTIME) ./pkg/auth
	$(GO) test -run '^$$' -fuzz FuzzReadFile -fuzztime $(FUZZTIME) ./pkg/auth/tokendir
	$(GO) test -run '^$$' -fuzz '^FuzzWrite$$' -fuzztime $(FUZZTIME) ./pkg/auth/tokendir
	$(GO) test -run '^$$' -fuzz FuzzOffer -fuzztime $(FUZZTIME) ./pkg/auth/source
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME) ./pkg/benchreport

clean:
	rm -rf $(BIN)
