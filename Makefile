# Two commands set everything up on a fresh machine: `make bench` and `make test`.
# They use the active python3 when it already has torch (e.g. a CUDA build); otherwise they make
# .venv with the CPU torch 2.13.0. The extension is built with --no-build-isolation so pip never
# downloads a CUDA torch into an isolated build environment.

PY := $(shell if [ -x .venv/bin/python ]; then echo .venv/bin/python; \
	elif python3 -c "import torch" >/dev/null 2>&1; then echo python3; \
	else echo .venv/bin/python; fi)
DEPS := numpy scipy pytest ninja matplotlib expecttest setuptools wheel
ARGS ?=

.PHONY: env build test bench cuda-check sanitize clean

env:
	@if [ "$(PY)" = ".venv/bin/python" ] && [ ! -x .venv/bin/python ]; then \
		echo "== creating .venv with torch 2.13.0 (CPU)"; \
		python3 -m venv .venv && .venv/bin/python -m pip install -q -U pip && \
		.venv/bin/python -m pip install -q torch==2.13.0 $(DEPS); \
	fi
	@$(PY) -c "import numpy, scipy, pytest, ninja, matplotlib, expecttest" 2>/dev/null || \
		$(PY) -m pip install -q $(DEPS)

# In place and incremental (ninja); the targets below import it from the checkout.
build: env
	@echo "== building torchinit_ext with $(PY)"
	@$(PY) setup.py -q build_ext --inplace

test: build
	PYTHONPATH=$(CURDIR) $(PY) -m pytest tests -q $(ARGS)

bench: build
	PYTHONPATH=$(CURDIR) $(PY) benchmarks/bench.py $(ARGS)

# Compiles every csrc/**/*.cu with nvcc against torch's headers, as setup.py would, without a GPU
# or a CUDA torch: the CPU wheel lacks only c10/cuda/impl/cuda_cmake_macros.h, which a one-line
# stub in a build-only include folder supplies. CI runs it so CUDA code that doesn't compile can't
# land.
CUDA_STUB := build/cuda-stub
NVCC_FLAGS := -std=c++20 -O3 --fmad=false -Xcompiler -ffp-contract=off --expt-relaxed-constexpr \
	-arch=sm_90 \
	-D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__ \
	-D__CUDA_NO_HALF2_OPERATORS__ -DTORCH_API_INCLUDE_EXTENSION_H -DTORCH_EXTENSION_NAME=_C

cuda-check: env
	@mkdir -p $(CUDA_STUB)/c10/cuda/impl
	@echo '#pragma once' > $(CUDA_STUB)/c10/cuda/impl/cuda_cmake_macros.h
	@includes=$$($(PY) -c "from torch.utils.cpp_extension import include_paths; \
		print(' '.join('-I' + p for p in include_paths()))"); \
	for src in $$(find csrc -name '*.cu' | sort); do \
		echo "== nvcc compile check: $$src"; \
		nvcc $(NVCC_FLAGS) -I$(CUDA_STUB) $$includes -c $$src -o /dev/null || exit 1; \
	done

# An ASan+UBSan copy of the extension, built CPU-only into build/sanitize (the in-place build is
# untouched), and pytest run against it (tests/sanitize.sh). ARGS picks the tests; the default is
# the whole suite (about 4 minutes under ASan on 2 cores) but test_cuda_logic, which compiles a
# host build of its own, and test_sharded, whose workers import the in-place build.
SANITIZE_TESTS := tests --ignore=tests/test_cuda_logic.py --ignore=tests/test_sharded.py

sanitize: env
	PY=$(PY) tests/sanitize.sh $(or $(ARGS),$(SANITIZE_TESTS))

clean:
	rm -rf build *.egg-info torchinit_ext/*.so
