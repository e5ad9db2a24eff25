# sandkey: `make run` starts a gateway with a demo sandbox; `make test` runs
# every test. Both work on a fresh Debian machine with Go installed.

GO        ?= go
BIN       := bin
PKGS      := ./...
GOBIN     := $(shell $(GO) env GOPATH)/bin
STATICCHECK_VERSION := v0.8.2
# Benchmarks repeat this often so benchstat can compare runs.
BENCH_COUNT ?= 6
# The whole suite must stay well under CI's budget.
TEST_TIMEOUT ?= 25m

.PHONY: all build test bench run lint proto fuzz clean images vm-image

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(BIN)/ ./cmd/...

test:
	./scripts/test-deps.sh
	./scripts/engine-deps.sh
	./scripts/vm-deps.sh
	$(GO) test -race -timeout $(TEST_TIMEOUT) $(PKGS)

bench:
	mkdir -p bench
	$(GO) test -run '^$$' -bench . -benchmem -count $(BENCH_COUNT) -timeout 60m $(PKGS) | tee bench/results.txt

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

# The sandbox base image (sandkey-base:latest), with whichever engine answers.
images:
	GO=$(GO) ./images/build.sh

# Short fuzzing of every parser; `make test` already runs their seed corpora.
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzVerify -fuzztime $(FUZZTIME) ./pkg/auth
	$(GO) test -run '^$$' -fuzz FuzzParseJWKS -fuzztime $(FUZZTIME) ./pkg/auth

clean:
	rm -rf $(BIN)
