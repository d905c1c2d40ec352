"""Each random fill against its exact distribution (scipy.stats), with fixed seeds."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

import torchinit_ext as init
from tests.helpers.common import P_MIN

N = 200_000


def _sample(fill, dtype=torch.float32, n=N, seed=0, **kw):
    t = fill(torch.empty(n, dtype=dtype), generator=torch.Generator().manual_seed(seed), **kw)
    return t.double().numpy()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("a,b", [(0.0, 1.0), (-3.0, 5.5)])
def test_uniform_ks(dtype, a, b):
    x = _sample(init.uniform_, dtype, a=a, b=b)
    assert x.min() >= a and x.max() < b
    assert stats.kstest(x, stats.uniform(a, b - a).cdf).pvalue > P_MIN


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mean,std", [(0.0, 1.0), (2.0, 0.02)])
def test_normal_ks(dtype, mean, std):
    x = _sample(init.normal_, dtype, mean=mean, std=std)
    assert stats.kstest(x, stats.norm(mean, std).cdf).pvalue > P_MIN


def test_normal_tails_chi_square():
    # Tail masses beyond 2, 3, 4 sigma against the exact normal, on 16M draws.
    x = np.abs(_sample(init.normal_, n=1 << 24, seed=1))
    edges = [0, 2, 3, 4, np.inf]
    observed = np.histogram(x, bins=edges)[0]
    expected = (
        np.diff([2 * stats.norm.cdf(e) - 1 if np.isfinite(e) else 1.0 for e in edges]) * x.size
    )
    assert stats.chisquare(observed, expected).pvalue > P_MIN


def test_bfloat16_normal_moments():
    x = _sample(init.normal_, torch.bfloat16)
    assert abs(x.mean()) < 0.01 and abs(x.std() - 1) < 0.01


def test_xavier_and_kaiming_scales():
    fan_in, fan_out = 400, 300
    cases = [
        (init.xavier_uniform_, stats.uniform(-math.sqrt(6 / 700), 2 * math.sqrt(6 / 700))),
        (init.xavier_normal_, stats.norm(0, math.sqrt(2 / 700))),
        (init.kaiming_uniform_, stats.uniform(-math.sqrt(6 / fan_in), 2 * math.sqrt(6 / fan_in))),
        (init.kaiming_normal_, stats.norm(0, math.sqrt(2 / fan_in))),
    ]
    for fill, dist in cases:
        w = torch.empty(fan_out, fan_in)
        kw = {"nonlinearity": "relu"} if "kaiming" in fill.__name__ else {}
        fill(w, generator=torch.Generator().manual_seed(3), **kw)
        assert stats.kstest(w.double().flatten().numpy(), dist.cdf).pvalue > P_MIN, fill.__name__


TRUNC_CASES = [  # mean, std, a, b
    (0.0, 1.0, -2.0, 2.0),
    (0.0, 1.0, -0.5, 0.5),
    (0.0, 1.0, 5.0, 6.0),
    (0.0, 1.0, -9.0, -8.5),
    (0.0, 1.0, 1.0, math.inf),
    (0.0, 0.002, -2.0, 2.0),
    (1.0, 2.0, -1.0, 0.0),
    (0.0, 1.0, 0.3, 0.31),  # narrow
    (0.0, 1.0, -math.inf, math.inf),  # the normal itself
    (0.0, 1.0, 40.0, 41.0),  # beyond inversion's range: the far-tail sampler
    (0.0, 1.0, -math.inf, -35.0),
    (3.0, 0.5, -math.inf, 2.0),  # mean above b
    (0.0, 1.0, -1.2816, 1.2816),  # normal mass 0.80002: rejection from the normal (float)
    (0.0, 1.0, -1.2815, 1.2815),  # 0.79995: inversion
    (2.0, 0.5, 1.0, 3.5),  # asymmetric, rejection from the normal
    (0.0, 1.0, 2.0, 3.0),  # narrow, in the tail
]


@pytest.mark.parametrize("mean,std,a,b", TRUNC_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.filterwarnings("ignore:mean is more than 2 std")
def test_trunc_normal_ks(mean, std, a, b, dtype):
    x = _sample(init.trunc_normal_, dtype, mean=mean, std=std, a=a, b=b)
    assert x.min() >= a and x.max() <= b
    dist = stats.truncnorm((a - mean) / std, (b - mean) / std, loc=mean, scale=std)
    assert stats.kstest(x, dist.cdf).pvalue > P_MIN


def test_trunc_normal_small_std_has_no_outliers():
    x = _sample(init.trunc_normal_, n=1 << 22, std=0.002)
    assert np.abs(x).max() < 0.002 * 6


def test_sparse_exact_zero_counts_and_uniform_positions():
    rows, cols, sparsity = 40, 5000, 0.3
    w = init.sparse_(
        torch.empty(rows, cols), sparsity, std=0.5, generator=torch.Generator().manual_seed(4)
    )
    zeros = w == 0
    assert (zeros.sum(0) == math.ceil(sparsity * rows)).all()
    per_row = zeros.sum(1).double().numpy()
    assert stats.chisquare(per_row).pvalue > P_MIN
    nonzero = w[~zeros].double().numpy()
    assert stats.kstest(nonzero, stats.norm(0, 0.5).cdf).pvalue > P_MIN


def test_sparse_is_reproducible_from_generator():
    a = init.sparse_(torch.empty(64, 32), 0.5, generator=torch.Generator().manual_seed(9))
    b = init.sparse_(torch.empty(64, 32), 0.5, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b)


ND_SHAPES = [(20_000,), (125, 160), (10, 8, 25, 10)]
ND_LAWS = [  # fill, kwargs (none of them exact in float32), the law
    (init.uniform_, {"a": -1.37, "b": 2.21}, stats.uniform(-1.37, 3.58)),
    (init.normal_, {"mean": -1.37, "std": 0.61}, stats.norm(-1.37, 0.61)),
    (
        init.trunc_normal_,
        {"mean": 0.41, "std": 0.73, "a": -0.62, "b": 1.05},
        stats.truncnorm((-0.62 - 0.41) / 0.73, (1.05 - 0.41) / 0.73, loc=0.41, scale=0.73),
    ),
]


@pytest.mark.parametrize("fill,kwargs,dist", ND_LAWS)
@pytest.mark.parametrize("shape", ND_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_multidimensional_fills_follow_the_law(fill, kwargs, dist, shape, dtype):
    w = fill(torch.empty(shape, dtype=dtype), generator=torch.Generator().manual_seed(21), **kwargs)
    x = w.double().flatten().numpy()
    if fill is init.trunc_normal_:  # [a, b] exactly, not only at the dtype's precision
        assert x.min() >= kwargs["a"] and x.max() <= kwargs["b"]
    elif fill is init.uniform_:
        lo, hi = (torch.tensor(kwargs[k], dtype=dtype).item() for k in ("a", "b"))
        assert x.min() >= lo and x.max() <= hi
    assert stats.kstest(x, dist.cdf).pvalue > P_MIN
