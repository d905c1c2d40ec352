# Two commands set everything up on a fresh machine: `make bench` and `make test`.
# They use the active python3 when it already has torch (e.g. a CUDA build); otherwise they make
# .venv with the CPU torch 2.13.0. The extension is built with --no-build-isolation so pip never
# downloads a CUDA torch into an isolated build environment.

PY := $(shell if [ -x .venv/bin/python ]; then echo .venv/bin/python; \
	elif python3 -c "import torch" >/dev/null 2>&1; then echo python3; \
	else echo .venv/bin/python; fi)
DEPS := numpy scipy pytest ninja matplotlib expecttest setuptools wheel
ARGS ?=

.PHONY: env build test bench clean

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

clean:
	rm -rf build *.egg-info torchinit_ext/*.so
