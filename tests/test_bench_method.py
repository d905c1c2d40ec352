"""The GPU bench's method, checked on the CPU with a scripted timer: CUDA rows sized beyond the
L2, run and launch counts from a warm call, no bandwidth fraction for a row the L2 can hold, and
the model rows' floor and their materialize() timed apart from the meta construction."""

import pytest
import torch

from benchmarks.models import ModelCase
from benchmarks.timing import (
    DEFAULT,
    FILL_NUMEL,
    MAX_LAUNCHES,
    Prepared,
    fill_numel,
    for_device,
    hbm_bytes,
    launches_for,
    run_case,
)

MiB = 2**20


@pytest.mark.parametrize(
    "l2, least",
    [
        (50 * MiB, 256 * MiB),  # H100, H200: 4x is 200 MiB, under the 256 MiB least
        (126 * 10**6, 512 * MiB),  # B200: 4x is 504 MB
        (6 * MiB, 256 * MiB),
        (None, 1024 * MiB),  # unknown: as if 256 MiB
    ],
)
def test_cuda_rows_write_4x_the_l2_and_at_least_256_mib(l2, least):
    assert hbm_bytes(l2) == least


def test_gpu_fill_rows_are_1_gib_unless_the_l2_asks_for_more():
    assert fill_numel(0) == fill_numel(hbm_bytes(50 * MiB)) == FILL_NUMEL
    assert fill_numel(hbm_bytes(300 * MiB)) * 4 == 2048 * MiB


def test_launches_make_a_sample_last_its_target():
    assert 57 <= launches_for(0.35e-3, 0.02) <= 58
    assert launches_for(0.5, 0.02) == 1
    assert launches_for(1e-9, 0.02) == MAX_LAUNCHES
    assert launches_for(1e-6, 0) == 1  # the CPU: one call a sample


def test_the_cpu_keeps_its_config_and_cuda_warms_up_twice():
    assert for_device(DEFAULT, "cpu") is DEFAULT
    cuda = for_device(DEFAULT, "cuda")
    assert cuda.warmup == 2 and cuda.sample_s > 0


def scripted_timer(cold_s, warm_s):
    """A timer that calls nothing: the first call of each fn takes cold_s, later ones warm_s, and
    the host half that. It records (fn, launches) of each call."""
    calls = []

    def timed(fn, launches=1):
        seconds = warm_s if any(fn is seen for seen, _ in calls) else cold_s
        calls.append((fn, launches))
        return seconds, seconds / 2

    timed.calls = calls
    return timed


class FillCase:
    name = "scripted fill"
    fresh_memory = False

    def calls(self, device):
        return object(), object(), object(), [torch.empty(1024)]


def test_cuda_counts_come_from_a_warm_call_where_the_cpu_default_takes_the_first():
    cold, warm = 5.0, 1e-4
    row = run_case(
        FillCase(), "cuda", scripted_timer(cold, warm), for_device(DEFAULT, "cuda"), 1e12
    )
    assert 195 <= row.launches["ext"] <= 205  # 20 ms samples of 0.1 ms calls
    assert row.runs == DEFAULT.max_runs  # 40 ms a pair of samples: the budget allows more
    assert row.ext_ms == pytest.approx(warm * 1e3) and row.ext_host_ms == pytest.approx(warm * 500)
    row = run_case(FillCase(), "cpu", scripted_timer(cold, warm), DEFAULT, 1e12)
    assert row.runs == 1  # the cold 10 s pair passes the 6 s row cap
    assert "launches" not in row.to_json() and "ext_host_ms" not in row.to_json()


def test_a_row_the_l2_can_hold_gets_no_bandwidth_fraction():
    cfg = for_device(DEFAULT, "cuda")
    held = run_case(FillCase(), "cuda", scripted_timer(1e-4, 1e-4), cfg, 1e12, beyond_bytes=8192)
    assert held.bandwidth_fraction is None and held.ext_ms is not None
    beyond = run_case(FillCase(), "cuda", scripted_timer(1e-4, 1e-4), cfg, 1e12, beyond_bytes=4096)
    assert beyond.bandwidth_fraction == pytest.approx(4096 / 1e-4 / 1e12)


def test_cuda_model_rows_time_materialize_alone_against_the_fill_bandwidth_floor():
    case = ModelCase("meta+reset vs materialize()", "meta_reset", "materialize")
    stock_fn, ext_fn, floor_fn, params = case.calls("cuda")
    assert floor_fn is None
    assert isinstance(stock_fn, Prepared) and isinstance(ext_fn, Prepared)
    assert all(p.is_meta for p in ext_fn.setup().parameters())  # built before the clock starts
    timed = scripted_timer(0.5, 0.5)
    row = run_case(case, "cuda", timed, for_device(DEFAULT, "cuda"), 2e12)
    nbytes = sum(p.numel() * p.element_size() for p in params)
    assert row.floor_ms == pytest.approx(nbytes / 2e12 * 1e3)
    assert {type(fn) for fn, _ in timed.calls} == {Prepared}  # no floor call
