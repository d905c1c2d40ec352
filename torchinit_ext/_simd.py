"""The SIMD level of the CPU kernels (csrc/cpu_runtime/simd.h). Every level gives bit-identical
values; lower ones exist to test and measure each path on one machine."""

import os
import warnings

from ._dispatch import ops


def cpu_capability() -> str:
    """The SIMD level the CPU kernels run with: ``"avx512"``, ``"avx2"`` or ``"default"``. It is
    the best this CPU has, lowered by the environment variable ``TORCHINIT_CPU_CAPABILITY`` (read
    when torchinit_ext is imported) or by :func:`set_cpu_capability`."""
    return ops.cpu_capability()


def supported_cpu_capabilities() -> list[str]:
    """The SIMD levels this CPU can run, best first."""
    return ops.supported_cpu_capabilities()


def set_cpu_capability(level: str | None) -> None:
    """Runs the CPU kernels with SIMD level `level` from now on, in every thread; ``None`` returns
    to the automatic choice (``TORCHINIT_CPU_CAPABILITY`` included). Raises ValueError for a level
    that is unknown or that this CPU lacks."""
    ops.set_cpu_capability(level)


def _warn_if_capability_ignored() -> None:
    requested = os.environ.get("TORCHINIT_CPU_CAPABILITY")
    if requested is not None and requested != cpu_capability():
        warnings.warn(
            f"TORCHINIT_CPU_CAPABILITY={requested!r} is not one of this CPU's SIMD levels "
            f"{supported_cpu_capabilities()}; the CPU kernels use {cpu_capability()!r}",
            stacklevel=3,
        )


_warn_if_capability_ignored()
