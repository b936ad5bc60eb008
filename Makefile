# rerank — set-up and checks. `make run` and `make test` install what they
# need: the ONNX Runtime library (npm pack + checksum, into .cache/), the
# BERT tokenizer.json (from the Go module cache) and the generated models.
SHELL := /bin/bash
GO ?= go
ORT_VERSION := 1.29.0
CACHE := .cache
ORT_LIB := $(CACHE)/onnxruntime/$(ORT_VERSION)/libonnxruntime.so.1
TOKENIZER := $(CACHE)/tokenizer/tokenizer.json
TINY_MODEL := $(CACHE)/models/tiny
DEMO_MODEL := $(CACHE)/models/demo
BIN := bin/rerank
TOKENIZER_MODULE := github.com/clems4ever/all-minilm-l6-v2-go
# Executions, not seconds: with a duration, Go 1.26's fuzz coordinator can
# report its own deadline as a failure ("context deadline exceeded", no
# crasher written: golang/go#75804, fixed in Go 1.27).
FUZZTIME ?= 100000x
export ONNXRUNTIME_LIB ?= $(abspath $(ORT_LIB))
export CGO_ENABLED := 1

.PHONY: all build run demo test fuzz-short fuzz ort assets tokenizer tiny-model demo-model demo-int8 bench bench-js bench-scale clean help deps

all: build

help:
	@echo "make run    build, install ONNX Runtime and the demo model, start 'rerank serve' on an embedded NATS server"
	@echo "make test   the whole test suite (installs what it needs)"
	@echo "make demo   start a worker, submit the examples, print the rankings, stop"
	@echo "make bench  the benchmark figures (BENCHMARKS.md)"
	@echo "make bench-scale  fleet scaling on a 3-node JetStream cluster, simulated model (docs/scaling.md)"
	@echo "make fuzz   run every fuzz target for longer (FUZZTIME_LONG=$(FUZZTIME_LONG) each)"
	@echo "make test-faults  fault injection at full load (RELIABILITY.md)"
	@echo "make soak   mixed chaos for SOAK=20m on a 3-node cluster, 3 workers and a gateway"

deps:
	@$(GO) mod download

ort: $(ORT_LIB)
$(ORT_LIB):
	@./scripts/fetch-ort.sh

tokenizer: $(TOKENIZER)
$(TOKENIZER):
	@$(GO) mod download $(TOKENIZER_MODULE)
	@mkdir -p $(dir $@)
	@cp "$$($(GO) list -m -f '{{.Dir}}' $(TOKENIZER_MODULE))/all_minilm_l6_v2/tokenizer.json" $@.part && chmod 644 $@.part && mv $@.part $@
	@echo "tokenizer: $@"

assets: ort tokenizer

# The VCS revision (and the release tag, if any) are linked in, for
# `rerank version`, the start-up log and rerank_build_info: the toolchain's
# own stamp is off wherever GOFLAGS holds -buildvcs=false. Linked every time
# (go build's cache keeps it quick), so a new commit is never missed.
GIT_REVISION := $(shell git rev-parse HEAD 2>/dev/null)
GIT_TIME := $(shell git log -1 --format=%cI 2>/dev/null)
GIT_MODIFIED := $(if $(shell git status --porcelain --untracked-files=no 2>/dev/null),true,false)
GIT_TAG := $(shell git describe --tags --dirty 2>/dev/null)
VERSION_LDFLAGS := -X github.com/rerank/rerank/version.stampedRevision=$(GIT_REVISION) -X github.com/rerank/rerank/version.stampedTime=$(GIT_TIME) \
	-X github.com/rerank/rerank/version.stampedModified=$(GIT_MODIFIED) -X github.com/rerank/rerank/version.stampedVersion=$(GIT_TAG)

build: $(BIN)
.PHONY: $(BIN)
$(BIN):
	@mkdir -p bin
	$(GO) build -ldflags '$(VERSION_LDFLAGS)' -o $(BIN) ./cmd/rerank

tiny-model: $(TINY_MODEL)/model.onnx
$(TINY_MODEL)/model.onnx: | $(BIN) $(TOKENIZER)
	@$(BIN) gen-model --size tiny --tokenizer $(TOKENIZER) --out $(TINY_MODEL)

demo-model: $(DEMO_MODEL)/model.onnx
$(DEMO_MODEL)/model.onnx: | $(BIN) $(TOKENIZER)
	@$(BIN) gen-model --size l12 --name demo --tokenizer $(TOKENIZER) --out $(DEMO_MODEL)

# The demo model's int8 copy, for make bench (rerank quantize: calibrated on
# its built-in job; rewritten when the quantizer changes).
DEMO_INT8 := $(CACHE)/models/demo-int8
demo-int8: $(DEMO_INT8)/model.onnx
$(DEMO_INT8)/model.onnx: $(DEMO_MODEL)/model.onnx $(filter-out %_test.go,$(wildcard model/quantize/*.go pipeline/calibrate/*.go)) | $(BIN)
	@rm -rf $(DEMO_INT8)
	@$(BIN) quantize --in $(DEMO_MODEL) --out $(DEMO_INT8) --check-candidates 0 >/dev/null && echo "int8 model: $(DEMO_INT8)"

run: build ort demo-model
	@echo "Demo model: random weights (MiniLM-L12 shape) — the scores are meaningless; see README for real models."
	@echo "Submit a job from another terminal:  $(BIN) submit examples/job.json"
	$(BIN) serve --log-format text

demo: build ort demo-model
	@./scripts/demo.sh

test: assets build cohere-sdk
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 12m ./...
	@$(MAKE) --no-print-directory test-helm
	@$(MAKE) --no-print-directory fuzz-short
	@$(MAKE) --no-print-directory parity

# make test-helm: renders the Helm chart (deploy/helm/rerank) with Helm's
# engine and checks it against deploy/k8s. A module of its own
# (deploy/helm/go.mod), so Helm's dependencies stay out of rerank's.
.PHONY: test-helm
test-helm:
	cd deploy/helm && $(GO) vet ./... && $(GO) test -count=1 ./...

# make cohere-sdk: the official Cohere SDK (npm cohere-ai, pinned in
# tools/cohere/package.json, --ignore-scripts) for the gateway's client test
# in cmd/rerank (TestGatewayServesRealClients).
COHERE_SDK := $(CACHE)/cohere-sdk
.PHONY: cohere-sdk
cohere-sdk: $(COHERE_SDK)/node_modules/cohere-ai/package.json
$(COHERE_SDK)/node_modules/cohere-ai/package.json: tools/cohere/package.json
	@mkdir -p $(COHERE_SDK)
	@cp tools/cohere/package.json $(COHERE_SDK)/
	@cd $(COHERE_SDK) && npm install --ignore-scripts --no-audit --no-fund --silent
	@touch $@

# make parity: `rerank run` against an independent JavaScript reference
# (tools/parity: transformers.js AutoTokenizer + onnxruntime-node 1.29.0,
# installed from npm with --ignore-scripts into .cache/parity) on the tiny
# model, for three presets at max lengths 512 and 128, and the injection
# golden files of inject/testdata against the reference's own injection.
PARITY := $(CACHE)/parity
.PHONY: parity parity-js
parity-js: $(PARITY)/node_modules/onnxruntime-node/package.json
$(PARITY)/node_modules/onnxruntime-node/package.json: tools/parity/package.json
	@mkdir -p $(PARITY)
	@cp tools/parity/package.json tools/parity/.npmrc $(PARITY)/
	@cd $(PARITY) && npm install --ignore-scripts --no-audit --no-fund --silent
	@touch $@
parity: build ort tiny-model parity-js
	@cp tools/parity/parity.mjs $(PARITY)/
	@node $(PARITY)/parity.mjs --rerank $(BIN) --model $(TINY_MODEL) --jobs tools/parity/jobs.json --golden inject/testdata --ort-lib $(abspath $(ORT_LIB))

FUZZ_TARGETS := schemas:FuzzDecodeJob inject:FuzzFormat model/wordpiece:FuzzTokenizePair model:FuzzGraphInfo model:FuzzPrepare model/quantize:FuzzGraph internal/onnxpb:FuzzFields gateway:FuzzLongestArray
fuzz-short:
	@log=$$(mktemp); trap 'rm -f $$log' EXIT; \
	for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "fuzz $$pkg $$fn ($(FUZZTIME))"; \
		if $(GO) test ./$$pkg -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) >$$log 2>&1; then tail -n 3 $$log; \
		else cat $$log; echo "fuzz $$pkg $$fn FAILED (a failing input is saved under $$pkg/testdata/fuzz/$$fn)"; exit 1; fi; done

FUZZTIME_LONG ?= 2000000x
fuzz:
	@$(MAKE) --no-print-directory fuzz-short FUZZTIME=$(FUZZTIME_LONG)

# make bench: the benchmark program (not timed unit tests) on the
# MiniLM-L12-shape model, plus the transformers.js peer (installed from npm
# with --ignore-scripts so onnxruntime-node downloads no CUDA files).
BENCH_JS := $(CACHE)/bench-js
BENCH_FLAGS ?=
bench-js: $(BENCH_JS)/node_modules/@huggingface/transformers/package.json
$(BENCH_JS)/node_modules/@huggingface/transformers/package.json: bench/transformersjs/package.json
	@mkdir -p $(BENCH_JS)
	@cp bench/transformersjs/package.json $(BENCH_JS)/
	@cd $(BENCH_JS) && npm install --ignore-scripts --no-audit --no-fund --silent
	@touch $@

bench: build ort demo-model demo-int8 bench-js
	@cp bench/transformersjs/bench.mjs $(BENCH_JS)/
	$(GO) run ./bench --model $(DEMO_MODEL) --int8-model $(DEMO_INT8) --rerank $(BIN) --js $(BENCH_JS) $(BENCH_FLAGS)

# make bench-scale: how a worker fleet scales on one 3-node JetStream cluster
# (docs/scaling.md): nats-server processes built from the module in go.mod,
# 1-32 `rerank serve` processes with a simulated model (no ONNX Runtime), a
# table per fleet size. SCALE_FLAGS passes rerank-bench flags, e.g.
# SCALE_FLAGS='--sizes 1,8 --partitions 3'.
SCALE_FLAGS ?=
.PHONY: bench-scale
bench-scale: build
	@$(GO) build -o bin/nats-server github.com/nats-io/nats-server/v2
	@$(GO) build -o bin/rerank-bench ./cmd/rerank-bench
	bin/rerank-bench scale --rerank $(BIN) --nats-server bin/nats-server $(SCALE_FLAGS)

# make gpu-bundle: the air-gapped GPU run (deploy/gpu/README.md).
.PHONY: gpu-bundle
gpu-bundle: assets
	@./scripts/gpu-bundle.sh

clean:
	rm -rf bin .data

# make tokref: regenerate the tokenizer reference cases (model/wordpiece/testdata)
# with the pinned Hugging Face tokenizers.js in tools/tokref. make test only
# reads the committed file.
TOKREF := $(CACHE)/tokref
.PHONY: tokref
tokref: $(TOKENIZER)
	@mkdir -p $(TOKREF)
	@cp tools/tokref/package.json tools/tokref/.npmrc tools/tokref/*.mjs $(TOKREF)/
	@cd $(TOKREF) && npm install --ignore-scripts --no-audit --no-fund --silent
	node $(TOKREF)/cases.mjs 1 400 | node $(TOKREF)/ref.mjs $(TOKENIZER) > model/wordpiece/testdata/bert-base-uncased-pairs.jsonl.part
	@mv model/wordpiece/testdata/bert-base-uncased-pairs.jsonl.part model/wordpiece/testdata/bert-base-uncased-pairs.jsonl
	@git diff --stat -- model/wordpiece/testdata || true

# ---- test-faults: fault injection and security (faults/, RELIABILITY.md) ----
# make test-faults        full loads (RERANK_FAULTS=full): 2,000-job SIGKILL,
#                         server restart and cluster leader-loss runs, 20,000
#                         queued jobs, 1,400 with poison; prints one line per
#                         scenario. FAULTS_FLAGS passes go test flags, e.g.
#                         FAULTS_FLAGS='-run TestWorkerSIGKILL'.
# make test-faults-short  the CI size (what `make test` runs, through `go test ./...`).
FAULTS_FLAGS ?=
.PHONY: test-faults test-faults-short
test-faults: assets
	RERANK_FAULTS=full $(GO) test -tags soak -count=1 -v -timeout 40m $(FAULTS_FLAGS) ./faults

test-faults-short: assets
	$(GO) test -short -count=1 -v -timeout 8m $(FAULTS_FLAGS) ./faults

# make soak: mixed chaos for SOAK (default 20m) on a 3-node cluster with 3
# workers and a gateway (faults.TestSoak, RELIABILITY.md): worker SIGKILLs,
# server restarts, gateway kills, hostile jobs and HTTP requests, a bulk
# backfill filling its lane beside interactive traffic; prints one
# `soak: …` line. make test-faults runs it for 3 min (built with -tags soak:
# make test does not build it).
SOAK ?= 20m
.PHONY: soak
soak: assets
	set -o pipefail; RERANK_SOAK=$(SOAK) $(GO) test -tags soak -count=1 -v -timeout 90m -run '^TestSoak$$' ./faults | grep -E '^(soak|--- |FAIL|ok|PASS)|soak_test'
# ---- end test-faults ----
