"""Deterministic fuzz of the compiled ops with hostile arguments (fixed seeds, never flaky).

Every target is a view in the middle of a guard buffer filled with a sentinel, so a write outside
the view shows up in the buffer. After every call either
  * it succeeded: no buffer element outside the views changed, each CPU target was written, and
    the values are finite where the law's parameters are sensible; or
  * it raised one of ALLOWED: no buffer element changed at all (checks come before any write).
Nothing may crash. Run it under `make sanitize` too: ASan/UBSan see what the guards cannot.
"""

import math
import random
from dataclasses import dataclass

import pytest
import torch

import torchinit_ext  # noqa: F401  (loading it registers torch.ops.torchinit_ext)
from tests.helpers.fill_laws import LAWS

ops = torch.ops.torchinit_ext

ALLOWED = (ValueError, TypeError, RuntimeError, IndexError, NotImplementedError, OverflowError)
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
OTHERS = (torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64)
LAW_NAMES = ("constant", "uniform", "normal", "trunc_normal")
BAD_LAWS = ("", "Uniform", "normal ", "trunc-normal", "kaiming", "constant\0", "x" * 300)
HOSTILE = (
    math.nan,
    math.inf,
    -math.inf,
    0.0,
    -0.0,
    -1.0,
    1e308,
    -1e308,
    1e-320,
    1e39,
    -1e39,
    2.0**63,
    65504.0,
    65520.0,
    3.5e38,
    1.0,
    5e-324,
)
KEYS = (0, 1, -1, I64_MIN, I64_MAX, I64_MIN + 1, I64_MAX - 1, 2**32, 2**32 - 1)
# Hostile shard entries: negative, huge, and pairs whose sums and products overflow int64.
HOSTILE_DIMS = (
    -1,
    -2,
    -(2**62),
    2**62,
    2**62 + 1,
    I64_MAX,
    I64_MAX - 1,
    I64_MIN,
    I64_MIN + 1,
    2**32,
    2**31,
    3 * 2**61,
)
LAYOUTS = ("contiguous", "transposed", "sliced", "expanded")


# ---------------------------------------------------------------------------------------------
# Guarded targets


def sentinel(dtype):
    if dtype == torch.bool:
        return True
    if dtype.is_complex:
        return complex(-1234.5, 0.25)
    if dtype.is_floating_point:
        return -1234.5  # far from anything a sensible law draws
    return 77


def raw(t):
    """t's bytes, one row per element in row-major order: comparisons are bitwise, NaN included."""
    flat = torch.empty(t.numel(), dtype=t.dtype).copy_(t.reshape(-1))  # any strides
    return flat.view(torch.uint8).reshape(t.numel(), -1)


def row_major(sizes):
    strides, stride = [], 1
    for s in reversed(sizes):
        strides.append(stride)
        stride *= max(s, 1)
    return strides[::-1]


def layout_strides(rng, sizes, layout):
    nd = len(sizes)
    if layout == "transposed" and nd >= 2:
        perm = list(range(nd))
        while perm == sorted(perm):
            rng.shuffle(perm)
        inner = row_major([sizes[p] for p in perm])
        strides = [0] * nd
        for i, p in enumerate(perm):
            strides[p] = inner[i]
        return strides
    if layout == "sliced" and nd >= 1:
        steps = [rng.choice((1, 2, 3)) for _ in sizes]
        alloc = [s * k + rng.randint(0, 2) for s, k in zip(sizes, steps)]
        return [st * k for st, k in zip(row_major(alloc), steps)]
    strides = row_major(sizes)
    if layout == "expanded" and nd >= 1:
        strides[rng.randrange(nd)] = 0
    return strides


class Guard:
    """Buffers with their bytes before the call and which of their elements the views cover."""

    def __init__(self):
        self.buffers = []  # [buffer, bytes before, mask of covered elements]

    def new_buffer(self, numel, dtype):
        buffer = torch.full((numel,), sentinel(dtype), dtype=dtype)
        self.buffers.append([buffer, None, torch.zeros(numel, dtype=torch.bool)])
        return len(self.buffers) - 1

    def view(self, index, sizes, strides, offset):
        buffer, _, covered = self.buffers[index]
        positions = torch.arange(buffer.numel()).as_strided(sizes, strides, offset)
        covered[positions.reshape(-1)] = True
        return buffer.as_strided(sizes, strides, offset)

    def snapshot(self):
        for entry in self.buffers:
            entry[1] = raw(entry[0]).clone()

    def assert_unchanged(self, what, everywhere):
        for k, (buffer, before, covered) in enumerate(self.buffers):
            changed = (raw(buffer) != before).any(dim=1)
            if not everywhere:
                changed &= ~covered
            bad = changed.nonzero().flatten().tolist()
            assert not bad, (
                f"{what}: buffer {k} changed at elements {bad[:10]} "
                f"({'anywhere' if everywhere else 'outside the targets'}, "
                f"{buffer.numel()} elements)"
            )


def random_sizes(rng, max_dim=4, max_size=5, zero=0.08):
    nd = rng.randint(0, max_dim)
    return [0 if rng.random() < zero else rng.randint(1, max_size) for _ in range(nd)]


def make_target(rng, guard, sizes, dtype, layout="contiguous", device="cpu"):
    if device == "meta":
        return torch.empty(sizes, dtype=dtype, device="meta")
    strides = layout_strides(rng, sizes, layout)
    span = 0 if 0 in sizes else 1 + sum((s - 1) * st for s, st in zip(sizes, strides))
    lo, hi = rng.randint(1, 7), rng.randint(1, 7)
    index = guard.new_buffer(lo + span + hi, dtype)
    return guard.view(index, sizes, strides, lo)


def random_target(rng, guard, sizes=None, meta=0.0, other_dtype=0.1):
    dtype = rng.choice(OTHERS) if rng.random() < other_dtype else rng.choice(FLOATS)
    sizes = random_sizes(rng) if sizes is None else sizes
    device = "meta" if rng.random() < meta else "cpu"
    layout = rng.choices(LAYOUTS, weights=(4, 3, 3, 1))[0]  # few expanded: refused by most ops
    return make_target(rng, guard, sizes, dtype, layout, device)


def overlaps(t):
    """Whether elements of t alias each other (as torch's has_internal_overlap says Yes)."""
    return t.numel() > 0 and any(st == 0 and s > 1 for s, st in zip(t.shape, t.stride()))


def random_fill_ok(t):
    return t.dtype in FLOATS and not overlaps(t)


def written(t, value=None):
    """Whether target t (CPU, non-empty) differs from the sentinel somewhere; always true when
    value (a constant it was filled with) rounds to the sentinel in t's dtype."""
    if value is not None:
        rounded = torch.tensor(value, dtype=torch.float64).to(t.dtype)
        if torch.equal(rounded, torch.tensor(sentinel(t.dtype), dtype=t.dtype)):
            return True
    return bool((t != sentinel(t.dtype)).any() | t.isnan().any())


def call(guard, fn, *args):
    """Runs fn(*args); on an error checks that nothing was written and returns it."""
    guard.snapshot()
    try:
        fn(*args)
    except ALLOWED as e:
        guard.assert_unchanged(f"raised {type(e).__name__}: {str(e)[:200]}", everywhere=True)
        return e
    guard.assert_unchanged("succeeded", everywhere=False)
    return None


# ---------------------------------------------------------------------------------------------
# fill_many_


@dataclass
class FillMany:
    selves: list
    laws: list
    params: list
    states: list
    full_sizes: list
    starts: list
    sensible: list  # per tensor: whether its parameters are ones a caller would pass


def sensible_law(rng):
    if rng.random() < 0.5:
        law, params = rng.choice(LAWS)
    elif (law := rng.choice(LAW_NAMES)) == "constant":
        params = (round(rng.uniform(-3, 3), 3),)
    elif law == "uniform":
        a = rng.uniform(-3, 3)
        params = (a, a + rng.uniform(0, 3))
    elif law == "normal":
        params = (rng.uniform(-3, 3), rng.uniform(0, 3))
    else:
        a = rng.uniform(-4, 4)
        params = (rng.uniform(-2, 2), rng.uniform(0.1, 3), a, a + rng.uniform(0, 4))
    return law, [float(p) for p in (*params, 0.0, 0.0, 0.0)[:4]]


def hostile_law(rng):
    law = rng.choice(BAD_LAWS) if rng.random() < 0.1 else rng.choice(LAW_NAMES)
    params = [rng.choice(HOSTILE) if rng.random() < 0.6 else rng.uniform(-3, 3) for _ in range(4)]
    return law, params


def random_shard(rng, sizes):
    """(full sizes, starts) of one tensor: a shard that fits, or hostile entries."""
    full, starts = [], []
    hostile = rng.random() < 0.35
    for s in sizes:
        extra = rng.randint(0, 3)
        f, st = s + extra, rng.randint(0, extra)
        if hostile and rng.random() < 0.5:
            kind = rng.randrange(6)
            if kind == 0:
                f = rng.choice(HOSTILE_DIMS)
            elif kind == 1:
                st = rng.choice(HOSTILE_DIMS)
            elif kind == 2:  # start + size just past int64: wraps to negative if unchecked
                st, f = I64_MAX - s + 1 + rng.randint(0, 1), rng.choice((f, I64_MAX))
            elif kind == 3:  # a valid-looking shard in a huge tensor
                f = rng.choice((2**62, 2**62 + 1, I64_MAX, 2**31 + 1))
                st = rng.choice((0, f - s, f // 2))
            elif kind == 4:  # start past the end
                st = f - s + rng.randint(1, 3)
            else:
                f = -rng.randint(0, 3) - 1
        full.append(f)
        starts.append(st)
    return full, starts


def random_fill_many(rng):
    guard = Guard()
    n = 0 if rng.random() < 0.03 else rng.randint(1, 4)
    meta = 0.12 if rng.random() < 0.3 else 0.0
    selves = [random_target(rng, guard, meta=meta, other_dtype=0.04) for _ in range(n)]
    laws, params, states, sensible = [], [], [], []
    for _ in range(n):
        ok = rng.random() < 0.8
        law, p = sensible_law(rng) if ok else hostile_law(rng)
        laws.append(law)
        params += p
        sensible.append(ok)
        states += [
            rng.choice(KEYS) if rng.random() < 0.3 else rng.getrandbits(64) - 2**63
            for _ in range(2)
        ]
    full, starts = [], []
    if rng.random() < 0.55:
        for t in selves:
            f, s = random_shard(rng, list(t.shape))
            full += f
            starts += s
    # Lists of the wrong lengths.
    r = rng.random() * 1.5
    if r < 0.03:
        laws = laws[:-1] if laws else ["uniform"]
    elif r < 0.06:
        params = params[:-1] if params else [0.0]
    elif r < 0.09:
        states = states + [0]
    elif r < 0.13 and full:
        (full if rng.random() < 0.5 else starts).pop(rng.randrange(len(full)))
    elif r < 0.16:
        full, starts = full + [2], starts + [0]
    elif r < 0.18:
        starts = starts + [0]
    return guard, FillMany(selves, laws, params, states, full, starts, sensible)


def fill_many_must_fail(c):
    """Why the call must raise, from its arguments alone; None when it may succeed."""
    n = len(c.selves)
    if (len(c.laws), len(c.params), len(c.states)) != (n, 4 * n, 2 * n):
        return "list lengths"
    if len(c.full_sizes) != len(c.starts):
        return "full_sizes and shard_starts lengths differ"
    if any(k < I64_MIN or k > I64_MAX for k in c.states + c.full_sizes + c.starts):
        return "int outside int64"
    if any(law not in LAW_NAMES for law in c.laws):
        return "unknown law"
    if any(not random_fill_ok(t) for t in c.selves):
        return "non-float or self-overlapping target"
    if {t.device.type for t in c.selves} >= {"meta", "cpu"}:
        return "meta and CPU tensors mixed"
    if c.full_sizes:
        if sum(t.dim() for t in c.selves) != len(c.full_sizes):
            return "full_sizes length"
        d = 0
        for t in c.selves:
            full, starts = c.full_sizes[d : d + t.dim()], c.starts[d : d + t.dim()]
            d += t.dim()
            if any(st < 0 or st + s > f for s, f, st in zip(t.shape, full, starts)):
                return f"shard {list(t.shape)} at {starts} does not fit in {full}"
            if math.prod(full) > I64_MAX:
                return f"full tensor {full} has more than 2^63 - 1 elements"
    return None


def fill_many_must_succeed(c):
    return (
        c.selves
        and all(c.sensible)
        and fill_many_must_fail(c) is None
        and all(f <= 2**20 for f in c.full_sizes)
    )


def shard_indices(t, full, starts):
    """Exact (Python int) index in the full tensor of each element of shard t, row-major."""
    strides = row_major(full)
    index = [0]
    for s, st, stride in zip(t.shape, starts, strides):
        index = [i + (st + k) * stride for i in index for k in range(s)]
    return index


def check_shard_values(t, law, params, states, full, starts):
    """A shard's values are those of the full tensor's elements: each equals the 1-element shard
    of a 1-D tensor at that element's (exact) index, which a wrapped index would not."""
    flat = t.reshape(-1)
    index = shard_indices(t, full, starts)
    refs = [torch.full((1,), sentinel(t.dtype), dtype=t.dtype) for _ in index]
    ops.fill_many_(
        refs,
        [law] * len(refs),
        params * len(refs),
        states * len(refs),
        [i + 1 for i in index],
        index,
    )
    ref = torch.cat(refs)
    assert torch.equal(raw(flat), raw(ref)), (
        f"shard {list(t.shape)} at {starts} of {full} ({law} {params}, {t.dtype}): values "
        f"{flat.tolist()[:6]} are not the full tensor's {ref.tolist()[:6]} at indices {index[:6]}"
    )


def run_fill_many(guard, c):
    must_fail = fill_many_must_fail(c)
    error = call(
        guard, ops.fill_many_, c.selves, c.laws, c.params, c.states, c.full_sizes, c.starts
    )
    where = (
        f"{[(list(t.shape), str(t.dtype)[6:], t.stride(), t.device.type) for t in c.selves]} "
        f"laws={c.laws} params={c.params} states={c.states} full={c.full_sizes} "
        f"starts={c.starts}"
    )
    if error is not None:
        assert not fill_many_must_succeed(c), f"valid call raised {error!r}: {where}"
        return
    assert must_fail is None, f"succeeded although it must raise ({must_fail}): {where}"
    d = 0
    for k, (t, law, ok) in enumerate(zip(c.selves, c.laws, c.sensible)):
        params, states = c.params[4 * k : 4 * k + 4], c.states[2 * k : 2 * k + 2]
        full, starts = c.full_sizes[d : d + t.dim()], c.starts[d : d + t.dim()]
        d += t.dim()
        if t.device.type != "cpu" or t.numel() == 0:
            continue
        value = params[0] if law == "constant" else None
        assert written(t, value), f"target {k} was not written: {where}"
        if ok and law != "constant":
            assert torch.isfinite(t).all(), f"target {k}: non-finite values {t}: {where}"
        if c.full_sizes and t.numel() <= 64:
            check_shard_values(t, law, params, states, full, starts)


CHUNKS, PER_CHUNK = 7, 100


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_fill_many_random(chunk):
    rng = random.Random(1000 + chunk)
    for i in range(PER_CHUNK):
        guard, case = random_fill_many(rng)
        try:
            run_fill_many(guard, case)
        except AssertionError as e:
            raise AssertionError(f"chunk {chunk} case {i}: {e}") from None


def _hand(spec, full=(), starts=(), laws=None, params=None, states=None):
    """A hand-made fill_many_ case: spec holds sizes (a contiguous float32 CPU target) or
    (sizes, dtype, layout, device) tuples."""
    rng = random.Random(7)
    guard = Guard()
    selves = []
    for s in spec:
        sizes, dtype, layout, device = (
            s if isinstance(s, tuple) else (s, torch.float32, "contiguous", "cpu")
        )
        selves.append(make_target(rng, guard, sizes, dtype, layout, device))
    n = len(selves)
    laws = ["uniform"] * n if laws is None else laws
    params = [-1.0, 1.0, 0.0, 0.0] * n if params is None else params
    states = [5, 6] * n if states is None else states
    sensible = params is None  # hostile parameters may be refused
    return guard, FillMany(selves, laws, params, states, list(full), list(starts), [sensible] * n)


HAND_CASES = {
    "start-2^63-2": lambda: _hand([[4]], [4], [2**63 - 2]),
    "start-max": lambda: _hand([[4]], [I64_MAX], [I64_MAX - 4]),  # ends at the last element
    "start-max-over": lambda: _hand([[4]], [I64_MAX], [I64_MAX - 3]),
    "start-min": lambda: _hand([[4]], [4], [I64_MIN]),
    "full-2^62x2": lambda: _hand([[2, 2]], [2**62, 2**62], [0, 0]),
    "full-2^62x2-end": lambda: _hand([[2, 2]], [2**62, 2**62], [2**62 - 2, 2**62 - 2]),
    "full-2^32x2^31": lambda: _hand([[2, 3]], [2**32, 2**31], [2**32 - 2, 5]),
    "full-max-row": lambda: _hand([[2, 3]], [2, I64_MAX], [0, I64_MAX - 3]),
    "full-prod-wrap": lambda: _hand([[1, 1, 3]], [2**32, 2**32, 3], [1, 0, 0]),
    "full-prod-0": lambda: _hand([[0, 2]], [0, I64_MAX], [0, 0]),
    "full-neg-zero-dim": lambda: _hand([[0, 3]], [-1, 3], [0, 0]),
    "full-neg-zero-start": lambda: _hand([[0]], [-5], [-5]),
    "full-min": lambda: _hand([[0]], [I64_MIN], [0]),
    "start-past-end-empty": lambda: _hand([[0]], [4], [5]),
    "start-at-end-empty": lambda: _hand([[0]], [4], [4]),
    "start-neg-empty": lambda: _hand([[0]], [4], [-1]),
    "start-past-end": lambda: _hand([[2]], [4], [3]),
    "start-neg": lambda: _hand([[2]], [4], [-1]),
    "start+size-wrap": lambda: _hand([[3]], [5], [I64_MAX - 1]),
    "scalar-shard": lambda: _hand([[]], [], []),
    "scalar-extra-dims": lambda: _hand([[]], [1], [0]),
    "short-full": lambda: _hand([[2, 2]], [2], [0]),
    "long-full": lambda: _hand([[2]], [2, 2], [0, 0]),
    "full-no-starts": lambda: _hand([[2]], [2], []),
    "starts-no-full": lambda: _hand([[2]], [], [0]),
    "second-bad": lambda: _hand([[3], [2, 2]], [3, 2, 2], [0, 0, 2**63 - 2]),
    "meta-then-cpu": lambda: _hand([([4], torch.float32, "contiguous", "meta"), [4]]),
    "cpu-then-meta": lambda: _hand([[3, 2], ([2], torch.float32, "contiguous", "meta")]),
    "meta-cpu-shard": lambda: _hand(
        [([4], torch.float32, "contiguous", "meta"), [2]], [4, 4], [0, 1]
    ),
    "meta-only": lambda: _hand([([4], torch.float16, "contiguous", "meta")]),
    "no-tensors": lambda: _hand([]),
    "bad-law-second": lambda: _hand([[3], [3]], laws=["normal", "Normal"]),
    "int-second": lambda: _hand([[3], ([3], torch.int64, "contiguous", "cpu")]),
    "expanded": lambda: _hand([([3, 4], torch.float32, "expanded", "cpu")], laws=["constant"]),
    "key-over-int64": lambda: _hand([[3]], states=[2**63, 0]),
    "nan-constant": lambda: _hand([[3]], laws=["constant"], params=[math.nan, 0, 0, 0]),
    "huge-constant-f16": lambda: _hand(
        [([3], torch.float16, "contiguous", "cpu")], laws=["constant"], params=[1e5, 0, 0, 0]
    ),
    "uniform-inf": lambda: _hand([[3]], params=[-math.inf, math.inf, 0, 0]),
    "uniform-wide-f32": lambda: _hand([[3]], params=[-3e38, 3e38, 0, 0]),
    "normal-nan-std": lambda: _hand([[3]], laws=["normal"], params=[0, math.nan, 0, 0]),
    "trunc-nan": lambda: _hand([[3]], laws=["trunc_normal"], params=[0, 1, math.nan, 1]),
    "trunc-denormal": lambda: _hand([[3]], laws=["trunc_normal"], params=[0, 1e-320, -1, 1]),
    "trunc-far": lambda: _hand([[3]], laws=["trunc_normal"], params=[0, 1, 1e308, math.inf]),
}


@pytest.mark.parametrize("name", list(HAND_CASES))
def test_fill_many_hand(name):
    guard, case = HAND_CASES[name]()
    run_fill_many(guard, case)


def test_fill_many_shared_buffer():
    """Views of one buffer: apart ones fill, interleaved ones may be refused (untouched), ones
    that share elements must be."""
    guard = Guard()
    index = guard.new_buffer(64, torch.float32)
    a = guard.view(index, [3, 4], [4, 1], 2)
    b = guard.view(index, [2, 3], [3, 1], 20)
    args = (["normal", "uniform"], [0, 1, 0, 0, 0, 1, 0, 0], [1, 2, 3, 4], [], [])
    assert call(guard, ops.fill_many_, [a, b], *args) is None
    assert written(a) and written(b)
    c = guard.view(index, [2, 3], [8, 2], 31)
    d = guard.view(index, [2, 3], [8, 2], 32)  # interleaved with c, no element shared
    call(guard, ops.fill_many_, [c, d], *args)
    e = guard.view(index, [2, 2], [8, 1], 18)  # shares elements with a and b
    assert call(guard, ops.fill_many_, [a, e], *args) is not None, "overlapping targets accepted"
    assert call(guard, ops.fill_many_, [e, b], *args) is not None, "overlapping targets accepted"


# ---------------------------------------------------------------------------------------------
# Single ops


def scalar(rng, sensible_values):
    """(value, sensible): a hostile scalar a third of the time."""
    if rng.random() < 0.35:
        return rng.choice(HOSTILE), False
    return rng.choice(sensible_values) if isinstance(
        sensible_values, tuple
    ) else sensible_values(), True


def generator(rng):
    return None if rng.random() < 0.2 else torch.Generator().manual_seed(rng.getrandbits(32))


def _uniform(rng, t):
    a, ok_a = scalar(rng, lambda: rng.uniform(-3, 3))
    b, ok_b = scalar(rng, lambda: a + rng.uniform(0, 3))
    fails = not random_fill_ok(t) or not (math.isfinite(a) and math.isfinite(b) and a <= b)
    return (ops.uniform_, (t, a, b, generator(rng))), ok_a and ok_b, fails


def _normal(rng, t):
    mean, ok_m = scalar(rng, lambda: rng.uniform(-3, 3))
    std, ok_s = scalar(rng, lambda: rng.uniform(0, 3))
    fails = not random_fill_ok(t) or not std >= 0
    return (ops.normal_, (t, mean, std, generator(rng))), ok_m and ok_s, fails


def _trunc_normal(rng, t):
    law, (mean, std, a, b) = rng.choice([law for law in LAWS if law[0] == "trunc_normal"])
    ok = True
    args = [mean, std, a, b]
    for i in range(4):
        if rng.random() < 0.2:
            args[i], ok = rng.choice(HOSTILE), False
    mean, std, a, b = args
    fails = (
        not random_fill_ok(t)
        or not math.isfinite(mean)
        or not (std > 0 and math.isfinite(std))
        or not a <= b
    )
    return (ops.trunc_normal_, (t, mean, std, a, b, generator(rng))), ok, fails


def _sparse(rng, t):
    sparsity, ok_p = scalar(rng, (0.0, 0.1, 0.5, 0.9, 1.0))
    std, ok_s = scalar(rng, lambda: rng.uniform(0, 2))
    fails = t.dim() != 2 or not random_fill_ok(t) or not 0 <= sparsity <= 1 or not std >= 0
    return (ops.sparse_, (t, sparsity, std, generator(rng))), ok_p and ok_s, fails


def _orthogonal(rng, t):
    gain, ok = scalar(rng, (1.0, 0.5, 2.0, -1.0))
    fails = t.dim() < 2 or not random_fill_ok(t) or not math.isfinite(gain)
    return (ops.orthogonal_, (t, gain, generator(rng))), ok, fails


def _orthogonal_batch(rng, t):
    gain, ok = scalar(rng, (1.0, 0.5))
    fails = t.dim() < 3 or not random_fill_ok(t) or not math.isfinite(gain)
    return (ops.orthogonal_batch_, (t, gain, generator(rng))), ok, fails


CONSTANTS = (
    0,
    1,
    -1,
    2,
    255,
    256,
    -129,
    2**31,
    2**62,
    I64_MAX,
    I64_MIN,
    2**63,
    0.5,
    -1234.5,
    True,
    False,
    1 + 2j,
    complex(math.nan, 0),
    *HOSTILE,
)


def _constant(rng, t):
    value = rng.choice(CONSTANTS)
    return (ops.constant_, (t, value)), False, False


def _eye(rng, t):
    return (ops.eye_, (t,)), False, t.dim() != 2 or overlaps(t)


def _dirac(rng, t):
    groups = rng.choice((0, -1, 1, 2, 3, 2**62))
    fails = not 3 <= t.dim() <= 5 or groups <= 0 or t.shape[0] % groups != 0 or overlaps(t)
    return (ops.dirac_, (t, groups)), False, fails


# op name: (make the call for a target, dims drawn from, max size); mostly dims the op takes.
ANY_DIM = (0, 1, 2, 3, 4)
SINGLE = {
    "uniform": (_uniform, ANY_DIM, 5),
    "normal": (_normal, ANY_DIM, 5),
    "trunc_normal": (_trunc_normal, ANY_DIM, 5),
    "sparse": (_sparse, (2, 2, 2, 2, 1, 3), 6),
    "constant": (_constant, ANY_DIM, 5),
    "eye": (_eye, (2, 2, 2, 1, 3, 0), 5),
    "dirac": (_dirac, (3, 4, 5, 3, 4, 5, 2, 6), 4),
    "orthogonal": (_orthogonal, (2, 2, 3, 1), 5),
    "orthogonal_batch": (_orthogonal_batch, (3, 3, 4, 2), 4),
}
SINGLE_CASES = 120


def reference(name, t, args):
    """Stock torch's result for the deterministic fills, or None where stock refuses."""
    ref = torch.full(t.shape, sentinel(t.dtype), dtype=t.dtype)
    try:
        if name == "constant":
            ref.fill_(args[1])
        elif name == "eye":
            torch.nn.init.eye_(ref)
        elif name == "dirac":
            torch.nn.init.dirac_(ref, args[1])
        else:
            return None
    except Exception:  # noqa: BLE001  (stock refusing is not what is tested)
        return None
    return ref


@pytest.mark.parametrize("name", list(SINGLE))
def test_single_op(name):
    make, dims, max_size = SINGLE[name]
    rng = random.Random(sum(map(ord, name)))  # not hash(): salted per process
    for i in range(SINGLE_CASES):
        guard = Guard()
        sizes = [
            0 if rng.random() < 0.06 else rng.randint(1, max_size) for _ in range(rng.choice(dims))
        ]
        t = random_target(rng, guard, sizes, meta=0.05)
        (op, args), sensible, must_fail = make(rng, t)
        where = (
            f"{name} case {i}: {list(t.shape)} {t.dtype} {t.stride()} {t.device} args={args[1:]}"
        )
        error = call(guard, op, *args)
        if error is not None:
            assert not (sensible and not must_fail), f"{where}: valid call raised {error!r}"
            continue
        assert not must_fail, f"{where}: succeeded although it must raise"
        if t.device.type != "cpu" or t.numel() == 0:
            continue
        ref = reference(name, t, args)
        if ref is not None:
            assert torch.equal(raw(t), raw(ref)), f"{where}: {t} differs from stock {ref}"
        elif name != "constant":
            assert written(t), f"{where}: target not written"
        if sensible:
            assert torch.isfinite(t).all(), f"{where}: non-finite values {t}"


@pytest.mark.parametrize("n", [-1, 0, 3])
def test_philox_blocks(n):
    for key in KEYS:
        for offset in (0, 1, I64_MAX, I64_MIN, -1):
            try:
                out = ops.philox_blocks(key, offset, n)
            except ALLOWED:
                assert n < 0
                continue
            assert n >= 0, f"philox_blocks({key}, {offset}, {n}) succeeded"
            assert out.shape == (n, 4) and out.dtype == torch.int32
            assert torch.equal(out, ops.philox_blocks(key, offset, n))
    for bad in (2**63, -(2**63) - 1):
        with pytest.raises(ALLOWED):
            ops.philox_blocks(bad, 0, 1)
