"""trunc_normal_ and sparse_: exact laws on the dtype's grid, exact zero counts, reproducibility."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

import torchinit_ext as init

ops = torch.ops.torchinit_ext

P_MIN = 1e-4  # fixed seeds: deterministic p-values; the threshold guards regressions


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _grid_values(dtype, a, b):
    """Every finite value of `dtype` in [a, b], ascending, as float64."""
    if dtype == torch.float32:
        lo, hi = np.float32(a), np.float32(b)
        lo = lo if lo >= a else np.nextafter(lo, np.float32(np.inf))
        hi = hi if hi <= b else np.nextafter(hi, np.float32(-np.inf))
        bits = np.arange(lo.view(np.int32), hi.view(np.int32) + 1, dtype=np.int32)  # a, b > 0 here
        return bits.view(np.float32).astype(np.float64)
    every = torch.arange(-(1 << 15), 1 << 15, dtype=torch.int32).to(torch.int16).view(dtype).double()
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
        above_candidates = _grid_values(dtype, grid[-1], np.inf if dtype != torch.float32 else 2 * b)
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
    x = init.trunc_normal_(torch.empty(400_000, dtype=dtype), mean, std, a, b, generator=_gen(0))
    x = x.double().numpy()
    assert x.min() >= a and x.max() <= b
    assert _rounded_law_pvalue(x, dtype, mean, std, a, b) > P_MIN


def test_trunc_normal_bounds_do_not_pile_up():
    # [-0.3, 0.3] in bfloat16: the outermost values inside get their cell's mass, no more.
    x = init.trunc_normal_(torch.empty(1 << 20, dtype=torch.bfloat16), 0.0, 1.0, -0.3, 0.3, generator=_gen(1))
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
    x = init.trunc_normal_(torch.empty(n, dtype=dtype), 0.0, 1.0, -2.0, 2.0, generator=_gen(13))
    assert torch.isfinite(x).all() and x.min() >= -2.0 and x.max() <= 2.0
    grid = _grid_values(dtype, -2.0, 2.0)
    edges = np.concatenate([[-2.0], (grid[1:] + grid[:-1]) / 2, [2.0]])
    masses = np.diff(stats.truncnorm(-2.0, 2.0).cdf(edges))
    expected = (1 - (1 - masses) ** n).sum()
    assert abs(x.unique().numel() - expected) < 5 * math.sqrt(expected)


@pytest.mark.parametrize("dtype,collisions", [(torch.float32, 20), (torch.float64, 0)])
def test_trunc_normal_full_precision_values_are_distinct(dtype, collisions):
    n = 10_000
    x = init.trunc_normal_(torch.empty(n, dtype=dtype), 0.0, 1.0, -2.0, 2.0, generator=_gen(14))
    assert torch.isfinite(x).all() and x.min() >= -2.0 and x.max() <= 2.0
    assert x.unique().numel() >= n - collisions


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_trunc_normal_bounds_20_std_away_are_never_returned(dtype):
    # Nothing is clamped onto a bound: with std 0.1, +-2 lie 20 std out of reach.
    x = init.trunc_normal_(torch.empty(20_000, dtype=dtype), 0.0, 0.1, -2.0, 2.0, generator=_gen(15))
    assert (x != -2.0).all() and (x != 2.0).all()
    assert x.abs().max().item() < 0.7


def test_trunc_normal_far_tail_values_are_exact_and_in_range():
    x = init.trunc_normal_(torch.empty(200_000, dtype=torch.float64), 0.0, 1.0, 40.0, math.inf, generator=_gen(2))
    assert x.min() >= 40.0 and torch.isfinite(x).all()
    # Conditional on exceeding 40, (X - 40) * 40 is close to Exp(1): mean ~ 1 - 2/1600.
    assert abs(((x - 40) * 40).mean().item() - 1) < 0.01


def test_trunc_normal_quantiles_match_scipy():
    # The inversion itself, on a grid of probabilities: z at u = 0 is a, at u -> 1 it is b.
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 3e-6)):
        x = init.trunc_normal_(torch.empty(1 << 16, dtype=dtype), 0.0, 1.0, -3.0, 1.5, generator=_gen(3))
        xs = np.sort(x.double().numpy())
        dist = stats.truncnorm(-3.0, 1.5)
        probs = (np.arange(xs.size) + 0.5) / xs.size
        assert np.max(np.abs(dist.cdf(xs) - probs)) < 6 / math.sqrt(xs.size) + tol


WIDE_SWITCH = 1.2815515655446004  # Phi^-1(0.9): [-b, b] has normal mass 0.8 = kWideMass


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("b,wide", [(2.0, True), (WIDE_SWITCH + 1e-4, True), (WIDE_SWITCH - 1e-4, False)])
def test_trunc_normal_wide_keeps_normal_values(dtype, b, wide):
    # With mass >= 0.8, element i's value is normal_'s (computed in float32, then rounded)
    # wherever that float lies in [-b, b], and only the rejected elements are redrawn; below the
    # switch, inversion shares nothing with normal_.
    x = init.trunc_normal_(torch.empty(300_000, dtype=dtype), 0, 1, -b, b, generator=_gen(11))
    y = init.normal_(torch.empty(300_000), 0.0, 1.0, generator=_gen(11))
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
        view = init.trunc_normal_(base.t(), 0.0, 1.0, -1.3, 1.3, generator=_gen(12))
        flat = torch.empty(777, 1001, dtype=dtype)
        init.trunc_normal_(flat, 0.0, 1.0, -1.3, 1.3, generator=_gen(12))
        assert torch.equal(view, flat)


def test_trunc_normal_a_equal_b_is_constant():
    x = init.trunc_normal_(torch.empty(50), 0.0, 1.0, 0.25, 0.25)
    assert (x == 0.25).all()


@pytest.mark.parametrize("kwargs,words", [
    ({"a": 0.3, "b": 0.3001}, "no BFloat16 value"),
    ({"mean": math.nan}, "mean"),
    ({"std": math.inf}, "std"),
    ({"a": math.nan}, "a <= b"),
    ({"a": math.inf, "b": math.inf}, "finite"),
])
def test_trunc_normal_bad_input_leaves_tensor_untouched(kwargs, words):
    t = torch.full((5, 7), 3.0, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match=words):
        init.trunc_normal_(t, **kwargs)
    assert (t == 3.0).all()


# ---- sparse_ ------------------------------------------------------------------------------------

@pytest.mark.parametrize("rows,cols,sparsity", [(40, 300, 0.3), (40, 300, 0.9), (7, 3, 0.5), (1, 5, 0.0),
                                                (5, 1, 1.0), (130, 70, 0.999), (64, 17, 0.01)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_sparse_exact_zero_count_per_column(rows, cols, sparsity, dtype):
    w = init.sparse_(torch.empty(rows, cols, dtype=dtype), sparsity, std=1.0, generator=_gen(4))
    assert ((w == 0).sum(0) == math.ceil(sparsity * rows)).all()


@pytest.mark.parametrize("sparsity", [1 / 3, 2 / 3])  # choose the zeros / choose the nonzeros
def test_sparse_zero_sets_are_uniform_subsets(sparsity):
    # 6 rows, 2 or 4 zeros: each column's zero set must be one of the 15 subsets, uniformly.
    w = init.sparse_(torch.empty(6, 30_000), sparsity, std=1.0, generator=_gen(5))
    codes = ((w == 0).long() * (2 ** torch.arange(6))[:, None]).sum(0)
    _, counts = codes.unique(return_counts=True)
    assert counts.numel() == 15
    assert stats.chisquare(counts.numpy()).pvalue > P_MIN


def test_sparse_columns_are_independent_and_rows_uniform():
    rows, cols, zeros = 50, 20_000, 10
    z = (init.sparse_(torch.empty(rows, cols), zeros / rows, generator=_gen(6)) == 0).double()
    # Row counts: multinomial-like with covariance cols p (1 - p) n / (n - 1) (I - 11^T / n).
    p = zeros / rows
    stat = ((z.sum(1) - cols * p) ** 2).sum().item() / (cols * p * (1 - p) * rows / (rows - 1))
    assert stats.chi2(rows - 1).sf(stat) > P_MIN
    # Neighbouring columns share on average zeros^2 / rows zero rows.
    shared = (z[:, 1:] * z[:, :-1]).sum(0).numpy()
    expected = zeros * zeros / rows
    assert abs(shared.mean() - expected) < 6 * shared.std() / math.sqrt(shared.size)


def test_sparse_default_std_is_one_hundredth():
    w = init.sparse_(torch.empty(100, 250), 0.2, generator=_gen(16))
    assert ((w == 0).sum(0) == 20).all()
    nonzero = w[w != 0].double().numpy()
    assert stats.kstest(nonzero, stats.norm(0, 0.01).cdf).pvalue > P_MIN
    assert stats.kstest(nonzero, stats.norm(0, 0.011).cdf).pvalue < P_MIN  # the std is what is checked


@pytest.mark.parametrize("shape", [(), (6,), (3, 4, 5)])
def test_sparse_refuses_tensors_that_are_not_2d(shape):
    t = torch.full(shape, 2.0)
    with pytest.raises(ValueError, match="Only tensors with 2 dimensions are supported"):
        init.sparse_(t, 0.5)
    assert (t == 2.0).all()


def test_sparse_nonzeros_are_normal():
    w = init.sparse_(torch.empty(300, 700), 0.25, std=0.5, generator=_gen(7))
    nonzero = w[w != 0].double().numpy()
    assert stats.kstest(nonzero, stats.norm(0, 0.5).cdf).pvalue > P_MIN


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("sparsity", [0.2, 0.9])  # choose the zeros / choose the nonzeros
def test_sparse_nonzeros_follow_the_numbering_contract(dtype, sparsity):
    # The j-th nonzero in row-major order is normal_'s element j under the call's key.
    rows, cols, std = 90, 150, 0.5
    w = init.sparse_(torch.empty(rows, cols, dtype=dtype), sparsity, std=std, generator=_gen(9))
    normals = torch.empty(cols * (rows - math.ceil(sparsity * rows)), dtype=dtype)
    key = ops.philox_key(w, _gen(9))
    ops.fill_many_([normals], ["normal"], [0.0, std, 0.0, 0.0], key)
    assert torch.equal(w[w != 0], normals)


def test_sparse_view_is_written_in_place_and_nothing_else():
    base = torch.full((20, 30), 7.0)
    view = base.t()[2:12, ::2]
    init.sparse_(view, 0.5, generator=_gen(8))
    assert ((view == 0).sum(0) == 5).all()
    untouched = torch.ones_like(base, dtype=torch.bool)
    untouched.t()[2:12, ::2] = False
    assert (base[untouched] == 7.0).all()
    expected = init.sparse_(torch.empty(view.shape), 0.5, generator=_gen(8))
    assert torch.equal(view, expected)


# ---- the RNG contract for both --------------------------------------------------------------------

FILLS = {
    "trunc_normal_": lambda t, g: init.trunc_normal_(t, generator=g),
    "trunc_normal_ far tail": lambda t, g: init.trunc_normal_(t, 0.0, 1.0, -math.inf, -31.0, generator=g),
    "trunc_normal_ wide, 20% rejected": lambda t, g: init.trunc_normal_(t, 0.0, 1.0, -1.29, 1.29, generator=g),
    "sparse_": lambda t, g: init.sparse_(t, 0.8, generator=g),
    "sparse_ dense": lambda t, g: init.sparse_(t, 0.2, generator=g),
}


@pytest.mark.parametrize("name", FILLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_thread_count_invariance(name, dtype):
    results = []
    for threads in (1, 2, 3):
        torch.set_num_threads(threads)
        results.append(FILLS[name](torch.empty(515, 333, dtype=dtype), _gen(9)))
    assert all(torch.equal(results[0], r) for r in results[1:])


@pytest.mark.parametrize("name", FILLS)
def test_reproducible_and_default_generator(name):
    torch.manual_seed(12)
    a = FILLS[name](torch.empty(64, 48), None)
    b = FILLS[name](torch.empty(64, 48), None)
    c = FILLS[name](torch.empty(64, 48), _gen(12))
    assert torch.equal(a, c) and not torch.equal(a, b)


def test_trunc_normal_prefix_property():
    for dtype in (torch.float32, torch.float64, torch.float16):
        short = init.trunc_normal_(torch.empty(37, dtype=dtype), generator=_gen(5))
        long = init.trunc_normal_(torch.empty(100_003, dtype=dtype), generator=_gen(5))
        assert torch.equal(short, long[:37])
