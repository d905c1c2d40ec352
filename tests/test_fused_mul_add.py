"""FmafInDouble (csrc/math/fused_mul_add.h), the default SIMD level's fused multiply-add, equals
libm's fmaf bit for bit wherever it does not flag its value for recomputation: on the kinds of
triples the transforms use, crafted ties and specials (tests/fused_mul_add_host.cpp)."""

import os

import pytest
from torch.utils.cpp_extension import load

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Kinds in fused_mul_add_host.cpp's order.
KINDS = [
    "any_bits",
    "horner",
    "open_unit",
    "scale_shift",
    "exact_tie",
    "near_tie",
    "special",
    "tiny",
]
# Where double rounding differs from fmaf's: the kinds that prove the flag is needed.
TIES = {"exact_tie", "near_tie", "special", "tiny"}
# The transforms' own kinds.
USED = {"horner", "open_unit", "scale_shift"}


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    module = load(
        name="torchinit_fused_mul_add_host",
        sources=[os.path.join(ROOT, "tests", "fused_mul_add_host.cpp")],
        extra_include_paths=[os.path.join(ROOT, "csrc")],
        extra_cflags=["-O2", "-ffp-contract=off"],
        build_directory=str(tmp_path_factory.mktemp("fused_mul_add_host")),
    )
    assert module.kinds == len(KINDS)
    return module


def _check(host, n, seed):
    for kind, name in enumerate(KINDS):
        mismatches, flagged, wrong = host.check(kind, n, seed + kind)
        assert mismatches == 0, (name, mismatches)
        if name in TIES:
            assert wrong > 0, name  # the triples reach the cases the flag exists for
        if name in USED:
            assert flagged <= n // 10_000, (name, flagged)  # recomputing stays rare


def test_equals_fmaf(host):
    _check(host, 200_000, 20260)


@pytest.mark.slow
def test_equals_fmaf_sweep(host):
    """10^8 triples: about 10 s on one core."""
    _check(host, 12_500_000, 7)
