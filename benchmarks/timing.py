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
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import torch

from benchmarks.machine import l2_cache_bytes

FILL_NUMEL = 256 * 2**20  # 1 GiB of float32: larger than CPU L3 / GPU L2
# A CUDA row's time is an HBM figure only when the row writes well past the L2, which serves a
# tensor that fits in it, or nearly: at least this many times the L2, and 256 MiB.
L2_MULTIPLE = 4
MIN_HBM_BYTES = 256 * 2**20
UNKNOWN_L2_BYTES = 256 * 2**20  # where torch does not say: larger than any GPU's L2 so far
MAX_LAUNCHES = 1000  # back-to-back calls in one timed CUDA sample, at most

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
    # CUDA: the device time one timed sample lasts, over back-to-back calls between one pair of
    # events; 0: one call a sample (the CPU).
    sample_s: float = 0.0


FULL = Config(warmup=2, min_runs=5, max_runs=25, budget_s=3.0, row_cap_s=math.inf, fill_repeats=10)
DEFAULT = Config(warmup=1, min_runs=3, max_runs=10, budget_s=0.5, row_cap_s=6.0, fill_repeats=5)


def for_device(cfg, device):
    """`cfg` as `device` runs it. On CUDA: two warm-up calls, so that the run and launch counts
    come from a warm call, not the first one (which loads kernels and grows the allocator's
    cache), and samples of back-to-back calls, so that the host's time for each call and the
    events' own are spread over many kernels."""
    if device != "cuda":
        return cfg
    return replace(cfg, warmup=max(cfg.warmup, 2), sample_s=0.02)


def run_counts(cfg):
    """The run counts of `cfg`, in words."""
    runs = f"{cfg.min_runs}-{cfg.max_runs} interleaved runs"
    if cfg.row_cap_s < math.inf:
        runs += f" (fewer, at least 1, where a row would pass {cfg.row_cap_s:g} s)"
    if cfg.sample_s:
        runs += f", each of back-to-back calls lasting about {cfg.sample_s * 1e3:g} ms"
    return runs


def run_count(pair_s, cfg):
    """Timed rounds for a row whose (stock, ext) samples take pair_s together: as many as fit
    cfg's budget, within its bounds, but fewer (at least 1) where those would pass its row cap."""
    runs = min(cfg.max_runs, max(cfg.min_runs, int(cfg.budget_s / pair_s)))
    if runs * pair_s > cfg.row_cap_s:
        runs = max(1, int(cfg.row_cap_s / pair_s))
    return runs


def launches_for(call_s, sample_s):
    """Back-to-back calls in one timed sample: enough for it to last sample_s (one where
    sample_s is 0), at most MAX_LAUNCHES."""
    if not sample_s:
        return 1
    return max(1, min(MAX_LAUNCHES, math.ceil(sample_s / call_s)))


def hbm_bytes(l2_bytes):
    """The bytes a CUDA row writes at least for its time to be an HBM figure, given the L2's
    size (None where unknown): a power of two."""
    need = max(MIN_HBM_BYTES, L2_MULTIPLE * (l2_bytes or UNKNOWN_L2_BYTES))
    return 1 << (need - 1).bit_length()


def hbm_row_bytes(device):
    """hbm_bytes for `device`'s L2 on CUDA; 0 on the CPU, where every row gets a bandwidth
    fraction."""
    return hbm_bytes(l2_cache_bytes()) if device == "cuda" else 0


def fill_numel(beyond_bytes):
    """Float32 elements of the fill-bandwidth probe and the GPU fill rows: FILL_NUMEL, or more
    where a device's L2 asks for more (beyond_bytes: hbm_bytes; 0 on the CPU)."""
    return max(FILL_NUMEL, beyond_bytes // 4)


@dataclass(frozen=True)
class Prepared:
    """A call timed apart from what it needs made first: run(setup()), setup before the clock
    starts (a model's meta construction before materialize())."""

    setup: Callable
    run: Callable


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
    """Return timed(fn, launches=1) -> (seconds, host seconds) per call of fn on `device`, over
    `launches` back-to-back calls, with the garbage collector off; fn's results are released after
    the clock stops, and a Prepared fn's setups are made before it starts. On CUDA one pair of
    events brackets all the calls, and the host seconds are the time to enqueue them: the device
    time is host-bound where they are the larger. On the CPU both are the wall time."""
    if device == "cuda":

        def clocked(calls):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            began = time.perf_counter()
            start.record()
            results = [call() for call in calls]
            end.record()
            host = time.perf_counter() - began
            end.synchronize()
            return start.elapsed_time(end) / 1e3, host, results
    else:

        def clocked(calls):
            start = time.perf_counter()
            results = [call() for call in calls]
            seconds = time.perf_counter() - start
            return seconds, seconds, results

    def timed(fn, launches=1):
        if isinstance(fn, Prepared):
            calls = [partial(fn.run, fn.setup()) for _ in range(launches)]
        else:
            calls = [fn] * launches
        gc.disable()
        try:
            seconds, host, _ = clocked(calls)
        finally:
            gc.enable()
        return seconds / launches, host / launches

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


def fill_bandwidth(device, timed, cfg, beyond_bytes):
    """Best-of-cfg.fill_repeats bytes/s of fill_(1.0) on a preallocated buffer of
    fill_numel(beyond_bytes) float32."""
    buf = torch.empty(fill_numel(beyond_bytes), dtype=torch.float32, device=device)
    buf.fill_(0.0)  # fault the pages in before timing
    fill = partial(buf.fill_, 1.0)
    launches = launches_for(timed(fill)[0], cfg.sample_s) if cfg.sample_s else 1
    best = min(timed(fill, launches)[0] for _ in range(cfg.fill_repeats))
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
    # CUDA alone (absent from the JSON elsewhere): the host's time to enqueue one call of each
    # side, their device time being host-bound where it is the larger, and each side's
    # back-to-back calls in a timed sample.
    stock_host_ms: float | None = None
    ext_host_ms: float | None = None
    launches: dict | None = None

    def to_json(self):
        cuda = ("stock_host_ms", "ext_host_ms", "launches")
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
        } | {k: getattr(self, k) for k in cuda if getattr(self, k) is not None}


def time_case(case, device, timed, cfg):
    """Per side (stock, ext, and the floor where the case has a floor call), the median seconds
    and host seconds per call; the bytes and elements written, the rounds, and each side's
    back-to-back calls per timed sample."""
    stock_fn, ext_fn, floor_fn, targets = case.calls(device)
    fns = {"stock": stock_fn, "ext": ext_fn}
    if floor_fn is not None:
        fns["floor"] = floor_fn

    def run(fn, launches=1):
        if case.fresh_memory:
            release_freed_memory(device)
        return timed(fn, launches)

    for _ in range(cfg.warmup):
        warm = {side: run(fn)[0] for side, fn in fns.items()}
    # The counts come from the last warm-up call: a warm one where cfg has two (for_device).
    launches = {side: launches_for(seconds, cfg.sample_s) for side, seconds in warm.items()}
    runs = run_count(sum(warm[side] * launches[side] for side in ("stock", "ext")), cfg)
    samples = {side: [] for side in fns}
    for _ in range(runs):
        for side, fn in fns.items():
            samples[side].append(run(fn, launches[side]))
    medians = {side: tuple(map(statistics.median, zip(*got))) for side, got in samples.items()}
    nbytes = sum(t.numel() * t.element_size() for t in targets)
    numel = sum(t.numel() for t in targets)
    return medians, nbytes, numel, runs, launches


def describe(error):
    """Exception type and the first line of its message."""
    lines = str(error).strip().splitlines()
    return ": ".join([type(error).__name__] + lines[:1])


def run_case(case, device, timed, cfg, bandwidth, beyond_bytes=0):
    """The row of `case`; its bandwidth fraction only where it writes beyond_bytes or more (on
    CUDA less would be an L2 figure, not a fraction of the HBM's bandwidth)."""
    row = Row(case.name, device)
    start = time.perf_counter()
    try:
        medians, nbytes, numel, row.runs, launches = time_case(case, device, timed, cfg)
    except Exception as e:  # report and go on with the next case
        row.error = describe(e)
        return row
    finally:
        row.wall_s = time.perf_counter() - start
    stock_s, ext_s = medians["stock"][0], medians["ext"][0]
    # Without a floor call (the CUDA model rows): what writing the bytes costs at fill bandwidth.
    floor_s = medians["floor"][0] if "floor" in medians else nbytes / bandwidth
    row.stock_ms = stock_s * 1e3
    row.ext_ms = ext_s * 1e3
    row.speedup = stock_s / ext_s
    row.floor_ms = floor_s * 1e3
    row.stock_x_floor = stock_s / floor_s
    row.ext_x_floor = ext_s / floor_s
    if nbytes >= beyond_bytes:
        row.bandwidth_fraction = nbytes / ext_s / bandwidth
    row.ext_elements_per_s = numel / ext_s
    if cfg.sample_s:
        row.stock_host_ms, row.ext_host_ms = (medians[side][1] * 1e3 for side in ("stock", "ext"))
        row.launches = launches
    return row
