"""How a row is timed: warm-up calls, a run count from their cost, then interleaved stock, ext
and floor calls and each one's median. Also the timers, the fill-bandwidth probe, fresh memory
for the model rows, and the busy processes of --contention."""

import contextlib
import ctypes
import gc
import math
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import partial

import torch

FILL_NUMEL = 256 * 2**20  # 1 GiB of float32: larger than CPU L3 / GPU L2

try:
    _malloc_trim = ctypes.CDLL(None).malloc_trim  # glibc
except (AttributeError, OSError, TypeError):
    _malloc_trim = None


@dataclass(frozen=True)
class Config:
    warmup: int  # untimed calls of each function before timing
    min_runs: int  # timed (stock, ext) pairs, at least ...
    max_runs: int  # ... and at most
    budget_s: float  # target time for the timed pairs of one case
    row_cap_s: float  # fewer than min_runs pairs (at least 1) where min_runs would pass this
    fill_repeats: int  # fill-bandwidth probe repeats


FULL = Config(warmup=2, min_runs=5, max_runs=25, budget_s=3.0, row_cap_s=math.inf, fill_repeats=10)
DEFAULT = Config(warmup=1, min_runs=3, max_runs=10, budget_s=0.5, row_cap_s=6.0, fill_repeats=5)


def run_counts(cfg):
    """The run counts of `cfg`, in words."""
    runs = f"{cfg.min_runs}-{cfg.max_runs} interleaved runs"
    if cfg.row_cap_s < math.inf:
        runs += f" (fewer, at least 1, where a row would pass {cfg.row_cap_s:g} s)"
    return runs


def fill_each(tensors):
    """The floor of writing `tensors` once: fill_ of each."""
    for tensor in tensors:
        tensor.fill_(1.0)


def tensor_specs(model):
    """Shape and dtype of every parameter and buffer of `model` (tied ones once)."""
    return [(t.shape, t.dtype) for t in [*model.parameters(), *model.buffers()]]


def allocate_and_fill(specs, device):
    """A model's floor: allocate each of its tensors and write it once, returned so that
    freeing them is not timed."""
    tensors = [torch.empty(shape, dtype=dtype, device=device) for shape, dtype in specs]
    fill_each(tensors)
    return tensors


def make_timer(device):
    """Return timed(fn) -> seconds for one call of fn on `device`, with the garbage collector off;
    fn's result is released after the clock stops."""
    if device == "cuda":

        def clocked(fn):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            result = fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3, result
    else:

        def clocked(fn):
            start = time.perf_counter()
            result = fn()
            return time.perf_counter() - start, result

    def timed(fn):
        gc.disable()
        try:
            seconds, _ = clocked(fn)
        finally:
            gc.enable()
        return seconds

    return timed


def release_freed_memory(device):
    """Collects garbage and, on the CPU, hands the memory malloc kept from freed allocations
    back to the OS, so that the next allocations get fresh pages whatever ran before."""
    gc.collect()
    if device == "cpu" and _malloc_trim is not None:
        _malloc_trim(0)


# A busy process of --contention: pure Python spinning on one core. It stops by itself when the
# bench that started it is gone (its parent changes), should the bench be killed outright.
SPINNER = """
import os
parent = os.getppid()
while os.getppid() == parent:
    for _ in range(1_000_000):
        pass
"""


@contextlib.contextmanager
def busy_processes(count):
    """`count` spinning processes for the duration of the block, killed at its end however it
    ends (exception, Ctrl-C, or SIGTERM, which main() turns into SystemExit)."""
    spinners = []
    try:
        for _ in range(count):
            spinners.append(subprocess.Popen([sys.executable, "-c", SPINNER]))
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
        for spinner in spinners:
            spinner.wait()


def fill_bandwidth(device, timed, repeats):
    """Best-of-`repeats` bytes/s of fill_(1.0) on a preallocated buffer."""
    buf = torch.empty(FILL_NUMEL, dtype=torch.float32, device=device)
    buf.fill_(0.0)  # fault the pages in before timing
    best = min(timed(partial(buf.fill_, 1.0)) for _ in range(repeats))
    return buf.numel() * buf.element_size() / best


@dataclass
class Row:
    case: str
    device: str
    stock_ms: float | None = None
    ext_ms: float | None = None
    speedup: float | None = None
    floor_ms: float | None = None  # writing the same tensors once (fill_; models: allocated too)
    stock_x_floor: float | None = None
    ext_x_floor: float | None = None
    bandwidth_fraction: float | None = None
    ext_elements_per_s: float | None = None  # parameters per second for the model rows
    runs: int | None = None  # timed (stock, ext) pairs behind the medians
    wall_s: float | None = None  # the row's wall time, warm-up and setup included
    error: str | None = None  # printed, not part of the JSON row

    def to_json(self):
        return {
            k: getattr(self, k)
            for k in (
                "case",
                "device",
                "stock_ms",
                "ext_ms",
                "speedup",
                "floor_ms",
                "stock_x_floor",
                "ext_x_floor",
                "bandwidth_fraction",
                "ext_elements_per_s",
                "runs",
                "wall_s",
            )
        }


def time_case(case, device, timed, cfg):
    """Median stock, ext and floor seconds and the bytes and elements written for one case."""
    stock_fn, ext_fn, floor_fn, targets = case.calls(device)

    def run(fn):
        if case.fresh_memory:
            release_freed_memory(device)
        return timed(fn)

    for _ in range(cfg.warmup):
        pair_s = run(stock_fn) + run(ext_fn)
        run(floor_fn)
    runs = min(cfg.max_runs, max(cfg.min_runs, int(cfg.budget_s / pair_s)))
    if runs * pair_s > cfg.row_cap_s:
        runs = max(1, int(cfg.row_cap_s / pair_s))
    stock_s, ext_s, floor_s = [], [], []
    for _ in range(runs):
        stock_s.append(run(stock_fn))
        ext_s.append(run(ext_fn))
        floor_s.append(run(floor_fn))
    nbytes = sum(t.numel() * t.element_size() for t in targets)
    numel = sum(t.numel() for t in targets)
    medians = (statistics.median(s) for s in (stock_s, ext_s, floor_s))
    return *medians, nbytes, numel, runs


def describe(error):
    """Exception type and the first line of its message."""
    lines = str(error).strip().splitlines()
    return ": ".join([type(error).__name__] + lines[:1])


def run_case(case, device, timed, cfg, bandwidth):
    row = Row(case.name, device)
    start = time.perf_counter()
    try:
        stock_s, ext_s, floor_s, nbytes, numel, row.runs = time_case(case, device, timed, cfg)
    except Exception as e:  # report and go on with the next case
        row.error = describe(e)
        return row
    finally:
        row.wall_s = time.perf_counter() - start
    row.stock_ms = stock_s * 1e3
    row.ext_ms = ext_s * 1e3
    row.speedup = stock_s / ext_s
    row.floor_ms = floor_s * 1e3
    row.stock_x_floor = stock_s / floor_s
    row.ext_x_floor = ext_s / floor_s
    row.bandwidth_fraction = nbytes / ext_s / bandwidth
    row.ext_elements_per_s = numel / ext_s
    return row
