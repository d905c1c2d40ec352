"""sparse_: exact zero counts, uniform zero sets, the law of the nonzeros, the numbering contract,
views, rank errors, and the RNG contract (threads, default generator)."""

import math

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
    ops,
)


@pytest.mark.parametrize(
    "rows,cols,sparsity",
    [
        (40, 300, 0.3),
        (40, 300, 0.9),
        (7, 3, 0.5),
        (1, 5, 0.0),
        (5, 1, 1.0),
        (130, 70, 0.999),
        (64, 17, 0.01),
    ],
)
@pytest.mark.parametrize("dtype", FLOATS)
def test_sparse_exact_zero_count_per_column(rows, cols, sparsity, dtype):
    w = init.sparse_(torch.empty(rows, cols, dtype=dtype), sparsity, std=1.0, generator=gen(4))
    assert ((w == 0).sum(0) == math.ceil(sparsity * rows)).all()


@pytest.mark.parametrize("sparsity", [1 / 3, 2 / 3])  # choose the zeros / choose the nonzeros
def test_sparse_zero_sets_are_uniform_subsets(sparsity):
    # 6 rows, 2 or 4 zeros: each column's zero set must be one of the 15 subsets, uniformly.
    w = init.sparse_(torch.empty(6, 30_000), sparsity, std=1.0, generator=gen(5))
    codes = ((w == 0).long() * (2 ** torch.arange(6))[:, None]).sum(0)
    _, counts = codes.unique(return_counts=True)
    assert counts.numel() == 15
    assert stats.chisquare(counts.numpy()).pvalue > P_MIN


def test_sparse_columns_are_independent_and_rows_uniform():
    rows, cols, zeros = 50, 20_000, 10
    z = (init.sparse_(torch.empty(rows, cols), zeros / rows, generator=gen(6)) == 0).double()
    # Row counts: multinomial-like with covariance cols p (1 - p) n / (n - 1) (I - 11^T / n).
    p = zeros / rows
    stat = ((z.sum(1) - cols * p) ** 2).sum().item() / (cols * p * (1 - p) * rows / (rows - 1))
    assert stats.chi2(rows - 1).sf(stat) > P_MIN
    # Neighbouring columns share on average zeros^2 / rows zero rows.
    shared = (z[:, 1:] * z[:, :-1]).sum(0).numpy()
    expected = zeros * zeros / rows
    assert abs(shared.mean() - expected) < 6 * shared.std() / math.sqrt(shared.size)


def test_sparse_default_std_is_one_hundredth():
    w = init.sparse_(torch.empty(100, 250), 0.2, generator=gen(16))
    assert ((w == 0).sum(0) == 20).all()
    nonzero = w[w != 0].double().numpy()
    assert stats.kstest(nonzero, stats.norm(0, 0.01).cdf).pvalue > P_MIN
    assert (
        stats.kstest(nonzero, stats.norm(0, 0.011).cdf).pvalue < P_MIN
    )  # the std is what is checked


@pytest.mark.parametrize("shape", [(), (6,), (3, 4, 5)])
def test_sparse_refuses_tensors_that_are_not_2d(shape):
    t = torch.full(shape, 2.0)
    with pytest.raises(ValueError, match="Only tensors with 2 dimensions are supported"):
        init.sparse_(t, 0.5)
    assert (t == 2.0).all()


def test_sparse_nonzeros_are_normal():
    w = init.sparse_(torch.empty(300, 700), 0.25, std=0.5, generator=gen(7))
    nonzero = w[w != 0].double().numpy()
    assert stats.kstest(nonzero, stats.norm(0, 0.5).cdf).pvalue > P_MIN


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("sparsity", [0.2, 0.9])  # choose the zeros / choose the nonzeros
def test_sparse_nonzeros_follow_the_numbering_contract(dtype, sparsity):
    # The j-th nonzero in row-major order is normal_'s element j under the call's Philox state.
    rows, cols, std = 90, 150, 0.5
    w = init.sparse_(torch.empty(rows, cols, dtype=dtype), sparsity, std=std, generator=gen(9))
    normals = torch.empty(cols * (rows - math.ceil(sparsity * rows)), dtype=dtype)
    state = ops.philox_state(w, gen(9))
    ops.fill_many_([normals], ["normal"], [0.0, std, 0.0, 0.0], state)
    assert torch.equal(w[w != 0], normals)


def test_sparse_view_is_written_in_place_and_nothing_else():
    base = torch.full((20, 30), 7.0)
    view = base.t()[2:12, ::2]
    init.sparse_(view, 0.5, generator=gen(8))
    assert ((view == 0).sum(0) == 5).all()
    untouched = torch.ones_like(base, dtype=torch.bool)
    untouched.t()[2:12, ::2] = False
    assert (base[untouched] == 7.0).all()
    expected = init.sparse_(torch.empty(view.shape), 0.5, generator=gen(8))
    assert torch.equal(view, expected)


# ---- the RNG contract ---------------------------------------------------------------------------

FILLS = {
    "sparse_": lambda t, g: init.sparse_(t, 0.8, generator=g),
    "sparse_ dense": lambda t, g: init.sparse_(t, 0.2, generator=g),
}


@pytest.mark.parametrize("name", FILLS)
@pytest.mark.parametrize("dtype", FLOATS)
def test_thread_count_invariance(name, dtype):
    assert_thread_count_invariant(FILLS[name], dtype)


@pytest.mark.parametrize("name", FILLS)
def test_reproducible_and_default_generator(name):
    assert_default_generator_is_torch_manual_seed(FILLS[name])
