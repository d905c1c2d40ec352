"""trunc_normal_: the exact law on the dtype's grid, bounds, the wide (rejection) and inversion
regimes, bad input, and the RNG contract (threads, default generator, prefix)."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

import torchinit_ext as init
from tests.helpers.common import (
    FLOATS,
    P_MIN,
    assert_default_generator_is_torch_manual_seed,
    assert_thread_count_invariant,
    gen,
)

# Means far outside [a, b] are the point of many cases here; that they warn as stock does is
# checked in test_api_parity.py.
pytestmark = pytest.mark.filterwarnings("ignore:mean is more than 2 std")


def _grid_values(dtype, a, b):
    """Every finite value of `dtype` in [a, b], ascending, as float64."""
    if dtype == torch.float32:
        lo, hi = np.float32(a), np.float32(b)
        lo = lo if lo >= a else np.nextafter(lo, np.float32(np.inf))
        hi = hi if hi <= b else np.nextafter(hi, np.float32(-np.inf))
        bits = np.arange(lo.view(np.int32), hi.view(np.int32) + 1, dtype=np.int32)  # a, b > 0 here
        return bits.view(np.float32).astype(np.float64)
    every = (
        torch.arange(-(1 << 15), 1 << 15, dtype=torch.int32).to(torch.int16).view(dtype).double()
    )
    every = every[torch.isfinite(every)].unique().numpy()
    return every[(every >= a) & (every <= b)]


def _rounded_law_pvalue(x, dtype, mean, std, a, b):
    """Chi-square of the sample against the exact truncated normal rounded to the dtype's grid and
    conditioned on landing in [a, b]: value v gets the mass of its rounding cell inside [a, b]."""
    grid = _grid_values(dtype, a, b)
    edges = np.concatenate([[a], (grid[1:] + grid[:-1]) / 2, [b]])
    edges[0], edges[-1] = max(a, edges[0]), min(b, edges[-1])
    if grid[0] > a:  # cell of the first value starts at its midpoint to the value below a
        below = _grid_values(dtype, -np.inf if dtype != torch.float32 else 0.0, grid[0])[-2]
        edges[0] = max(a, (below + grid[0]) / 2)
    if grid[-1] < b:
        above_candidates = _grid_values(
            dtype, grid[-1], np.inf if dtype != torch.float32 else 2 * b
        )
        edges[-1] = min(b, (grid[-1] + above_candidates[1]) / 2)
    dist = stats.truncnorm((a - mean) / std, (b - mean) / std, loc=mean, scale=std)
    probs = np.diff(dist.cdf(edges))
    probs /= probs.sum()
    counts = np.searchsorted(grid, x)
    assert np.array_equal(grid[counts], x), "a value off the grid or outside [a, b]"
    observed = np.bincount(counts, minlength=grid.size).astype(np.float64)
    expected = probs * x.size
    # Pool neighbouring cells until each expects at least 20 draws.
    obs_pooled, exp_pooled, o, e = [], [], 0.0, 0.0
    for oi, ei in zip(observed, expected):
        o, e = o + oi, e + ei
        if e >= 20:
            obs_pooled.append(o), exp_pooled.append(e)
            o, e = 0.0, 0.0
    obs_pooled[-1] += o
    exp_pooled[-1] += e
    return stats.chisquare(obs_pooled, exp_pooled).pvalue


ROUNDED_CASES = [  # dtype, mean, std, a, b
    (torch.bfloat16, 0.0, 1.0, -2.0, 2.0),
    (torch.bfloat16, 0.0, 1.0, -0.3, 0.3),  # bounds between bfloat16 values
    (torch.float16, 0.0, 1.0, -0.3, 0.3),
    (torch.bfloat16, 0.0, 1.0, 5.0, 6.0),
    (torch.float16, 0.0, 0.02, -0.04, 0.04),
    (torch.float32, 0.0, 1.0, 0.3, 0.30001),  # a few hundred float32 values
    # Rejection from the normal (mass >= 0.8), bounds between the dtype's values:
    (torch.float16, 0.0, 1.0, -2.0, 2.0),
    (torch.bfloat16, 0.0, 1.0, -1.2816, 1.2816),  # mass 0.80002, at the switch
    (torch.bfloat16, 0.0, 1.0, -1.2815, 1.2815),  # mass 0.79995: inversion
    (torch.float16, 0.5, 1.0, -1.01, 3.0),
    (torch.float16, 0.0, 1.0, 2.0, 3.0),  # narrow, in the tail: 2% of the normal's mass
]


@pytest.mark.parametrize("dtype,mean,std,a,b", ROUNDED_CASES)
def test_trunc_normal_rounded_law_and_bounds(dtype, mean, std, a, b):
    x = init.trunc_normal_(torch.empty(400_000, dtype=dtype), mean, std, a, b, generator=gen(0))
    x = x.double().numpy()
    assert x.min() >= a and x.max() <= b
    assert _rounded_law_pvalue(x, dtype, mean, std, a, b) > P_MIN


def test_trunc_normal_bounds_do_not_pile_up():
    # [-0.3, 0.3] in bfloat16: the outermost values inside get their cell's mass, no more.
    x = init.trunc_normal_(
        torch.empty(1 << 20, dtype=torch.bfloat16), 0.0, 1.0, -0.3, 0.3, generator=gen(1)
    )
    top = x.max().item()
    density_at_top = (x == top).double().mean().item()
    next_below = x[x < top].max().item()
    density_below = (x == next_below).double().mean().item()
    assert top <= 0.3 and density_at_top < 1.2 * density_below


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_trunc_normal_distinct_values_match_the_rounded_law(dtype):
    # n draws of [-2, 2] (both on the grid) hit sum_v 1 - (1 - p_v)^n distinct values in
    # expectation, p_v the mass of v's rounding cell; the count's variance is below its mean.
    n = 10_000
    x = init.trunc_normal_(torch.empty(n, dtype=dtype), 0.0, 1.0, -2.0, 2.0, generator=gen(13))
    assert torch.isfinite(x).all() and x.min() >= -2.0 and x.max() <= 2.0
    grid = _grid_values(dtype, -2.0, 2.0)
    edges = np.concatenate([[-2.0], (grid[1:] + grid[:-1]) / 2, [2.0]])
    masses = np.diff(stats.truncnorm(-2.0, 2.0).cdf(edges))
    expected = (1 - (1 - masses) ** n).sum()
    assert abs(x.unique().numel() - expected) < 5 * math.sqrt(expected)


@pytest.mark.parametrize("dtype,collisions", [(torch.float32, 20), (torch.float64, 0)])
def test_trunc_normal_full_precision_values_are_distinct(dtype, collisions):
    n = 10_000
    x = init.trunc_normal_(torch.empty(n, dtype=dtype), 0.0, 1.0, -2.0, 2.0, generator=gen(14))
    assert torch.isfinite(x).all() and x.min() >= -2.0 and x.max() <= 2.0
    assert x.unique().numel() >= n - collisions


@pytest.mark.parametrize("dtype", FLOATS)
def test_trunc_normal_bounds_20_std_away_are_never_returned(dtype):
    # Nothing is clamped onto a bound: with std 0.1, +-2 lie 20 std out of reach.
    x = init.trunc_normal_(torch.empty(20_000, dtype=dtype), 0.0, 0.1, -2.0, 2.0, generator=gen(15))
    assert (x != -2.0).all() and (x != 2.0).all()
    assert x.abs().max().item() < 0.7


def test_trunc_normal_far_tail_values_are_exact_and_in_range():
    x = init.trunc_normal_(
        torch.empty(200_000, dtype=torch.float64), 0.0, 1.0, 40.0, math.inf, generator=gen(2)
    )
    assert x.min() >= 40.0 and torch.isfinite(x).all()
    # Conditional on exceeding 40, (X - 40) * 40 is close to Exp(1): mean ~ 1 - 2/1600.
    assert abs(((x - 40) * 40).mean().item() - 1) < 0.01


def test_trunc_normal_quantiles_match_scipy():
    # The inversion itself, on a grid of probabilities: z at u = 0 is a, at u -> 1 it is b.
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 3e-6)):
        x = init.trunc_normal_(
            torch.empty(1 << 16, dtype=dtype), 0.0, 1.0, -3.0, 1.5, generator=gen(3)
        )
        xs = np.sort(x.double().numpy())
        dist = stats.truncnorm(-3.0, 1.5)
        probs = (np.arange(xs.size) + 0.5) / xs.size
        assert np.max(np.abs(dist.cdf(xs) - probs)) < 6 / math.sqrt(xs.size) + tol


WIDE_SWITCH = 1.2815515655446004  # Phi^-1(0.9): [-b, b] has normal mass 0.8 = kWideMass


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "b,wide", [(2.0, True), (WIDE_SWITCH + 1e-4, True), (WIDE_SWITCH - 1e-4, False)]
)
def test_trunc_normal_wide_keeps_normal_values(dtype, b, wide):
    # With mass >= 0.8, element i's value is normal_'s (computed in float32, then rounded)
    # wherever that float lies in [-b, b], and only the rejected elements are redrawn; below the
    # switch, inversion shares nothing with normal_.
    x = init.trunc_normal_(torch.empty(300_000, dtype=dtype), 0, 1, -b, b, generator=gen(11))
    y = init.normal_(torch.empty(300_000), 0.0, 1.0, generator=gen(11))
    inside = (y.double() >= -b) & (y.double() <= b)
    assert x.abs().max() <= b
    if wide:
        assert torch.equal(x[inside], y[inside].to(dtype))
        assert (x[~inside].float() != y[~inside]).all()
    else:
        assert (x == y.to(dtype)).double().mean() < 0.01


def test_trunc_normal_wide_views_and_chunks():
    # Redraws are indexed by logical element: a transposed view, written through the strided
    # path in chunks that start anywhere in a Philox block, equals the contiguous fill.
    for dtype in (torch.float32, torch.bfloat16):
        base = torch.empty(1001, 777, dtype=dtype)
        view = init.trunc_normal_(base.t(), 0.0, 1.0, -1.3, 1.3, generator=gen(12))
        flat = torch.empty(777, 1001, dtype=dtype)
        init.trunc_normal_(flat, 0.0, 1.0, -1.3, 1.3, generator=gen(12))
        assert torch.equal(view, flat)


def test_trunc_normal_a_equal_b_is_constant():
    x = init.trunc_normal_(torch.empty(50), 0.0, 1.0, 0.25, 0.25)
    assert (x == 0.25).all()


@pytest.mark.parametrize(
    "kwargs,words",
    [
        ({"a": 0.3, "b": 0.3001}, "no BFloat16 value"),
        ({"mean": math.nan}, "mean"),
        ({"std": math.inf}, "std"),
        ({"a": math.nan}, "a <= b"),
        ({"a": math.inf, "b": math.inf}, "finite"),
    ],
)
def test_trunc_normal_bad_input_leaves_tensor_untouched(kwargs, words):
    t = torch.full((5, 7), 3.0, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match=words):
        init.trunc_normal_(t, **kwargs)
    assert (t == 3.0).all()


# ---- the RNG contract ---------------------------------------------------------------------------

FILLS = {
    "trunc_normal_": lambda t, g: init.trunc_normal_(t, generator=g),
    "trunc_normal_ far tail": lambda t, g: init.trunc_normal_(
        t, 0.0, 1.0, -math.inf, -31.0, generator=g
    ),
    "trunc_normal_ wide, 20% rejected": lambda t, g: init.trunc_normal_(
        t, 0.0, 1.0, -1.29, 1.29, generator=g
    ),
}


@pytest.mark.parametrize("name", FILLS)
@pytest.mark.parametrize("dtype", FLOATS)
def test_thread_count_invariance(name, dtype):
    assert_thread_count_invariant(FILLS[name], dtype)


@pytest.mark.parametrize("name", FILLS)
def test_reproducible_and_default_generator(name):
    assert_default_generator_is_torch_manual_seed(FILLS[name])


def test_trunc_normal_prefix_property():
    for dtype in (torch.float32, torch.float64, torch.float16):
        short = init.trunc_normal_(torch.empty(37, dtype=dtype), generator=gen(5))
        long = init.trunc_normal_(torch.empty(100_003, dtype=dtype), generator=gen(5))
        assert torch.equal(short, long[:37])
