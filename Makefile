# Two commands set everything up on a fresh machine: `make bench` and `make test`.
# They use the active python3 when it already has torch (e.g. a CUDA build); otherwise they make
# .venv with the CPU torch 2.13.0. VENV=DIR TORCH="torch==... torchvision==..." makes and uses
# that venv instead, with that torch (CI's CUDA-torch jobs, .ci/run). The extension is built
# against the venv's torch, never in an isolated build environment, so pip never downloads a CUDA
# torch into one.

VENV ?= .venv
TORCH ?= torch==2.13.0
ifeq ($(origin VENV),command line)
PY := $(VENV)/bin/python
else
PY := $(shell if [ -x .venv/bin/python ]; then echo .venv/bin/python; \
	elif python3 -c "import torch" >/dev/null 2>&1; then echo python3; \
	else echo .venv/bin/python; fi)
endif
DEPS := numpy scipy pytest ninja matplotlib expecttest setuptools wheel ruff clang-format
# The model libraries of the real-model tests and bench rows: transformers and diffusers (neither
# requires torch), and timm and torchvision without their dependencies, which ask for torch (pip
# would fetch a CUDA build). torchvision is installed only where TORCH did not bring it: the PyPI
# torchvision 0.28 is a CUDA build whose C ops cannot load beside the CPU torch, but its
# pure-Python models work (tests/helpers/real_models.py). Where they can't be installed (no
# network), those tests skip.
MODEL_DEPS := transformers==5.24.0 diffusers==0.42.1 huggingface_hub safetensors pyyaml
MODEL_DEPS_NO_DEPS := timm==1.0.31
TORCHVISION_FALLBACK := torchvision==0.28.0
HAS_MODULES = $(PY) -c "import importlib.util as u, sys; sys.exit(not all(map(u.find_spec, sys.argv[1:])))"
ARGS ?=

.PHONY: env build test bench cuda-check gpu-cost gpu-check sanitize lint format clean

env:
	@if [ "$(PY)" = "$(VENV)/bin/python" ] && [ ! -x $(VENV)/bin/python ]; then \
		echo "== creating $(VENV) with $(TORCH)"; \
		python3 -m venv $(VENV) && $(VENV)/bin/python -m pip install -q -U pip && \
		$(VENV)/bin/python -m pip install -q $(TORCH) $(DEPS); \
	fi
	@$(PY) -c "import numpy, scipy, pytest, ninja, matplotlib, expecttest, ruff, clang_format" \
		2>/dev/null || \
		$(PY) -m pip install -q $(DEPS)
	@$(HAS_MODULES) transformers diffusers timm torchvision || \
		($(PY) -m pip install -q $(MODEL_DEPS) && \
		$(PY) -m pip install -q --no-deps $(MODEL_DEPS_NO_DEPS) && \
		($(HAS_MODULES) torchvision || \
		$(PY) -m pip install -q --no-deps $(TORCHVISION_FALLBACK))) || \
		echo "== model libraries not installed: the real-model tests will skip"

# In place and incremental (ninja); the targets below import it from the checkout.
build: env
	@echo "== building torchinit_ext with $(PY)"
	@$(PY) setup.py -q build_ext --inplace

test: build
	PYTHONPATH=$(CURDIR) $(PY) -m pytest tests -q $(ARGS)

# On a GPU machine, with its own python3 and torch and no network (the device tool's): builds the
# CUDA kernels for that GPU's architecture alone, runs the CUDA and device-invariance tests, and
# writes the GPU bench to a new dated file in benchmarks/results/ ($OUT too, when set). Without a GPU it
# stops at the first CUDA call with a one-line "no GPU"; TORCH_CUDA_ARCH_LIST=9.0 takes it that
# far on a machine without one (a dry run). benchmarks/gpu_check.py.
gpu-check:
	PYTHONPATH=$(CURDIR) $(PY) -m benchmarks.gpu_check $(ARGS)

# The default set takes 4-6 minutes on 2 cores and writes a new dated results file, never over
# another; ARGS=--full, --contention, "--simd all": benchmarks/README.md.
bench: build
	PYTHONPATH=$(CURDIR) $(PY) -m benchmarks.bench $(ARGS)

# Compiles every CUDA source with nvcc against torch's headers, as the CUDA build would, without a
# GPU or a CUDA torch (setup.py's cuda_check holds the flags). CI runs it, so CUDA code that
# doesn't compile can't land.
cuda-check: env
	@$(PY) setup.py -q cuda_check

# A static GPU cost report, without a GPU (benchmarks/gpu_cost.py): compiles the CUDA sources for
# sm_90 as the build does and prints each kernel's registers, stack, spills, FP64 instructions,
# 128-bit stores and SASS instructions per element beside issue 29's targets. It fails when a
# kernel is worse than its baseline in benchmarks/gpu_cost_budget.json (CI runs it, so kernels
# only get cheaper); ARGS=--update-baseline records the new figures, ARGS="--arch sm_80 sm_89
# sm_90" adds architectures. About 45 s on 2 cores. Its disassemblers come from pip, major 13 as
# the nvcc.
GPU_COST_DEPS := "nvidia-cuda-cuobjdump==13.*" "nvidia-cuda-nvdisasm==13.*"

gpu-cost: env
	@$(PY) -c "import importlib.metadata as m; m.version('nvidia-cuda-cuobjdump'); \
		m.version('nvidia-cuda-nvdisasm')" 2>/dev/null || $(PY) -m pip install -q $(GPU_COST_DEPS)
	$(PY) benchmarks/gpu_cost.py $(ARGS)

# An ASan+UBSan copy of the extension, built CPU-only into build/sanitize (the in-place build is
# untouched), and pytest run against it (tests/sanitize.sh). ARGS picks the tests; the default is
# the whole suite (about 4 minutes under ASan on 2 cores) but test_cuda_logic, which compiles a
# host build of its own, test_sharded, whose workers import the in-place build, and
# test_real_models, which exercises the model libraries, not new memory paths of ours.
SANITIZE_TESTS := tests --ignore=tests/test_cuda_logic.py --ignore=tests/test_sharded.py \
	--ignore=tests/test_real_models.py

sanitize: env
	PY=$(PY) tests/sanitize.sh $(or $(ARGS),$(SANITIZE_TESTS))

# Style: ruff (lint and format, pyproject.toml) for Python, clang-format (.clang-format) for C++ and
# CUDA. lint checks and changes nothing (CI runs it); format rewrites the files.
CPP_SOURCES = $(shell find csrc tests -name '*.h' -o -name '*.cpp' -o -name '*.cu' -o -name '*.cuh' \
	| sort)
CLANG_FORMAT = $(shell $(PY) -c "import clang_format; print(clang_format.get_executable('clang-format'))")

lint: env
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(CLANG_FORMAT) --dry-run --Werror $(CPP_SOURCES)

format: env
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .
	$(CLANG_FORMAT) -i $(CPP_SOURCES)

clean:
	rm -rf build *.egg-info torchinit_ext/*.so
