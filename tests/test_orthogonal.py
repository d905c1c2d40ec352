"""orthogonal_ and orthogonal_batch_: orthogonality, the Haar / Stiefel law (scipy.stats), the RNG
contract, in-place writes and argument errors. Fixed seeds throughout: p-values are deterministic,
the threshold guards regressions."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

import torchinit_ext as init
from tests.helpers.common import P_MIN, gen, ops

TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}
SHAPES = [(64, 64), (32, 96), (96, 32), (16, 4, 3, 3), (1, 1), (1, 5), (5, 1), (200, 130)]


def _assert_orthogonal(w, gain, dtype):
    m = w.reshape(w.shape[0], -1).double() / gain
    small = m @ m.t() if m.shape[0] <= m.shape[1] else m.t() @ m
    eye = torch.eye(small.shape[0], dtype=torch.float64)
    assert (small - eye).abs().max().item() < TOLERANCE[dtype]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", list(TOLERANCE))
def test_orthogonal_is_orthogonal(shape, dtype):
    w = init.orthogonal_(torch.empty(shape, dtype=dtype), gain=2.0, generator=gen(1))
    _assert_orthogonal(w, 2.0, dtype)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_orthogonal_batch_members_are_orthogonal(shape, dtype):
    batch = init.orthogonal_batch_(
        torch.empty((3, *shape), dtype=dtype), gain=0.5, generator=gen(1)
    )
    for w in batch:
        _assert_orthogonal(w, 0.5, dtype)


def test_orthogonal_writes_a_view_in_place_and_nothing_else():
    base = torch.zeros(40, 64)
    view = base[:, 8:40].t()  # 32 x 40, non-contiguous
    out = init.orthogonal_(view, gain=3.0, generator=gen(2))
    assert out is view
    _assert_orthogonal(base[:, 8:40].t(), 3.0, torch.float32)
    assert (base[:, :8] == 0).all() and (base[:, 40:] == 0).all()


def test_orthogonal_batch_writes_views_in_place():
    base = torch.zeros(4, 20, 12)
    batch = base[:, 2:18, 1:11].transpose(1, 2)  # 4 x 10 x 16, non-contiguous
    assert init.orthogonal_batch_(batch, generator=gen(3)) is batch
    for w in batch:
        _assert_orthogonal(w, 1.0, torch.float32)
    untouched = torch.ones_like(base, dtype=torch.bool)
    untouched[:, 2:18, 1:11] = False
    assert (base[untouched] == 0).all()


def _reference(gaussian, gain):
    """The definition, unblocked, in float64: Q = H_0 ... H_{n-1} [I; 0] with v_j = x_j + s_j
    ||x_j|| e_1, x_j = gaussian[j:, j], s_j = sign(x_j[0]); column j times -s_j and gain."""
    m, n = gaussian.shape
    q = np.eye(m, n)
    signs = np.where(np.diag(gaussian) >= 0, 1.0, -1.0)
    for j in reversed(range(n)):
        v = gaussian[j:, j].copy()
        v[0] += signs[j] * np.linalg.norm(v)
        q[j:] -= np.outer(v, 2 * (v @ q[j:]) / (v @ v))
    return q * -signs * gain


@pytest.mark.parametrize("shape", [(150, 150), (200, 70), (70, 200), (5, 1)])
def test_orthogonal_matches_the_unblocked_definition_and_draws_one_normal_fill(shape):
    rows, cols = shape
    m, n = max(rows, cols), min(rows, cols)
    batch = 3
    generator = gen(4)
    got = init.orthogonal_batch_(torch.empty(batch, *shape, dtype=torch.float64), 1.5, generator)
    # The whole call consumes one normal fill of shape (batch, m, n).
    replay = gen(4)
    gaussian = torch.empty(batch, m, n, dtype=torch.float64)
    ops.normal_(gaussian, 0.0, 1.0, replay)
    assert torch.equal(generator.get_state(), replay.get_state())
    for b in range(batch):
        want = _reference(gaussian[b].numpy(), 1.5)
        want = want.T if rows < cols else want
        np.testing.assert_allclose(got[b].numpy(), want, rtol=0, atol=1e-12)


def test_wide_is_the_transpose_of_tall_and_a_batch_of_one_is_a_single_call():
    tall = init.orthogonal_(torch.empty(96, 32), generator=gen(5))
    wide = init.orthogonal_(torch.empty(32, 96), generator=gen(5))
    assert torch.equal(wide, tall.t())
    one = init.orthogonal_batch_([torch.empty(96, 32)], generator=gen(5))[0]
    assert torch.equal(one, tall)


def _haar_checks(matrices, n):
    """Law of a Haar matrix on O(n): E[tr Q] = 0, E[(tr Q)^2] = 1, det = +-1 equally often,
    Q[0,0]^2 ~ Beta(1/2, (n-1)/2)."""
    traces = matrices.diagonal(dim1=-2, dim2=-1).sum(-1).numpy()
    dets = torch.linalg.det(matrices).numpy()
    trials = len(traces)
    assert abs(traces.mean()) < 4 / math.sqrt(trials)
    assert abs((traces**2).mean() - 1) < 0.15
    assert np.allclose(np.abs(dets), 1)
    assert stats.binomtest(int((dets > 0).sum()), trials).pvalue > P_MIN
    q00 = matrices[:, 0, 0].numpy() ** 2
    assert stats.kstest(q00, stats.beta(0.5, (n - 1) / 2).cdf).pvalue > P_MIN


def _stiefel_check(matrices):
    """An entry of a uniform m x n Stiefel matrix (m >= n) squared is Beta(1/2, (m-1)/2); for
    wide matrices, m is the column count."""
    m = max(matrices.shape[1:])
    q00 = matrices[:, 0, 0].numpy() ** 2
    assert stats.kstest(q00, stats.beta(0.5, (m - 1) / 2).cdf).pvalue > P_MIN


def test_orthogonal_haar_law():
    n, trials = 8, 4000
    g = gen(2)
    q = torch.stack(
        [
            init.orthogonal_(torch.empty(n, n, dtype=torch.float64), generator=g)
            for _ in range(trials)
        ]
    )
    _haar_checks(q, n)


@pytest.mark.parametrize("shape", [(6, 3), (3, 6)])
def test_orthogonal_stiefel_law(shape):
    g = gen(6)
    _stiefel_check(
        torch.stack(
            [
                init.orthogonal_(torch.empty(shape, dtype=torch.float64), generator=g)
                for _ in range(3000)
            ]
        )
    )


def test_orthogonal_batch_haar_law_and_independent_members():
    n, trials = 8, 8000
    q = init.orthogonal_batch_(torch.empty(trials, n, n, dtype=torch.float64), generator=gen(7))
    _haar_checks(q, n)
    traces = q.diagonal(dim1=-2, dim2=-1).sum(-1).numpy()
    assert abs(np.corrcoef(traces[:-1], traces[1:])[0, 1]) < 4 / math.sqrt(trials)
    assert abs(np.corrcoef(q[:-1, 0, 0].numpy(), q[1:, 0, 0].numpy())[0, 1]) < 4 / math.sqrt(trials)


@pytest.mark.parametrize("shape", [(6, 3), (3, 6)])
def test_orthogonal_batch_stiefel_law(shape):
    _stiefel_check(
        init.orthogonal_batch_(torch.empty(3000, *shape, dtype=torch.float64), generator=gen(8))
    )


@pytest.mark.parametrize(
    "fill,make",
    [
        (init.orthogonal_, lambda: torch.empty(200, 130)),
        (init.orthogonal_batch_, lambda: torch.empty(3, 70, 150)),
    ],
)
def test_reproducible_from_the_generator_and_thread_count(fill, make):
    first = fill(make(), generator=gen(9))
    assert torch.equal(first, fill(make(), generator=gen(9)))
    assert not torch.equal(first, fill(make(), generator=gen(10)))
    torch.manual_seed(9)
    assert torch.equal(first, fill(make()))
    for threads in (1, 2):
        torch.set_num_threads(threads)
        assert torch.equal(first, fill(make(), generator=gen(9)))


def test_orthogonal_batch_of_a_list_fills_each_member():
    weights = [torch.nn.Linear(48, 32).weight for _ in range(3)]
    assert init.orthogonal_batch_(weights, gain=2.0, generator=gen(11)) is weights
    for w in weights:
        _assert_orthogonal(w.detach(), 2.0, torch.float32)
    assert not torch.equal(weights[0], weights[1])


def test_empty_and_meta_tensors_are_a_no_op():
    assert init.orthogonal_(torch.empty(0, 3)).shape == (0, 3)
    assert init.orthogonal_batch_(torch.empty(0, 3, 3)).shape == (0, 3, 3)
    assert init.orthogonal_batch_([torch.empty(4, 0)])[0].shape == (4, 0)
    assert init.orthogonal_(torch.empty(4, 3, device="meta")).is_meta
    assert init.orthogonal_batch_([torch.empty(4, 3, device="meta")] * 2)[1].is_meta


BAD_CALLS = [  # fill, tensor, kwargs, error, message
    (init.orthogonal_, torch.zeros(4, 4, dtype=torch.int64), {}, NotImplementedError, "Long"),
    (init.orthogonal_, torch.zeros(4, 4), {"gain": math.inf}, ValueError, "gain=inf"),
    (init.orthogonal_, torch.zeros(4, 4), {"gain": math.nan}, ValueError, "gain=nan"),
    (init.orthogonal_, torch.zeros(4, 1).expand(4, 4), {}, ValueError, "share memory"),
    (
        init.orthogonal_batch_,
        torch.zeros(2, 4, 4, dtype=torch.int32),
        {},
        NotImplementedError,
        "Int",
    ),
    (init.orthogonal_batch_, torch.zeros(2, 4, 4), {"gain": -math.inf}, ValueError, "gain=-inf"),
    (init.orthogonal_batch_, torch.zeros(4, 4), {}, ValueError, "tensors"),
]


@pytest.mark.parametrize("fill,tensor,kwargs,error,message", BAD_CALLS)
def test_bad_input_raises_before_any_write(fill, tensor, kwargs, error, message):
    with pytest.raises(error, match=message):
        fill(tensor, **kwargs)
    assert (tensor == 0).all()


def test_one_dimensional_tensor_raises_stock_error():
    with pytest.raises(ValueError, match="Only tensors with 2 or more dimensions are supported"):
        init.orthogonal_(torch.zeros(3))
    with pytest.raises(ValueError, match="orthogonal_batch_: Only tensors with 3 or more"):
        ops.orthogonal_batch_(torch.zeros(3, 3), 1.0, None)


@pytest.mark.parametrize(
    "tensors",
    [
        [],
        [torch.zeros(4, 4), torch.zeros(4, 5)],
        [torch.zeros(4, 4), torch.zeros(4, 4, dtype=torch.float64)],
        [torch.zeros(4)],
    ],
)
def test_orthogonal_batch_refuses_bad_lists_before_any_write(tensors):
    with pytest.raises(ValueError, match="`tensors`"):
        init.orthogonal_batch_(tensors)
    assert all((t == 0).all() for t in tensors)
