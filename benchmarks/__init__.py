"""The benchmarks, run as modules from the repository root: ``python -m benchmarks.bench``
(``make bench``), ``python -m benchmarks.gpu_check`` (``make gpu-check``); benchmarks/README.md."""
