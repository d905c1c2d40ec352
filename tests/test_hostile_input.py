"""Regression tests for hostile and odd input: arguments that overflow, views with math bits,
fork after parallel fills, edge values of the laws, overlapping layouts, inference tensors and
the tensors stock fills that the compiled kernels don't take."""

import hashlib
import multiprocessing
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from scipy import stats

import torchinit_ext as init
from tests.helpers.common import gen, ops

# Means far outside [a, b] are the point of many cases here; that they warn as stock does is
# checked in test_api_parity.py.
pytestmark = pytest.mark.filterwarnings("ignore:mean is more than 2 std")

# (fill_many_'s own arguments that overflow, shards and devices, are in test_fill_many.py.)


# ---- arguments beyond the contract ----------------------------------------------------------


def test_single_ops_refuse_meta_tensors_beyond_the_contract():
    huge = torch.empty(2**30, 2**23, device="meta")
    with pytest.raises(ValueError, match="2\\^52"):
        ops.normal_(huge, 0.0, 1.0)
    ops.normal_(torch.empty(2**26, 2**26, device="meta"), 0.0, 1.0)


# ---- views with the negative or conjugate bit -------------------------------------------------


def test_neg_view_gets_the_values_through_its_bit():
    for _ in range(50):  # the heap corruption this guards against showed up in loops
        z = torch.zeros(64, dtype=torch.complex64)
        view = z.conj().imag
        assert view.is_neg()
        init.normal_(view, generator=gen(3))
        plain = init.normal_(torch.empty(64), generator=gen(3))
        assert torch.equal(view, plain)
        assert torch.equal(z.imag, -plain)
        assert (z.real == 0).all()


def test_conj_view_constant_and_fill_many():
    z = torch.zeros(6, dtype=torch.complex128)
    for _ in range(50):
        ops.constant_(z.conj(), 1 + 2j)
    assert (z == 1 - 2j).all()
    w = torch.zeros(4, 3, dtype=torch.complex64)
    plain = torch.empty(4, 3)
    ops.fill_many_([plain], ["uniform"], [0.0, 1.0, 0.0, 0.0], [8, 9])
    ops.fill_many_([w.conj().imag], ["uniform"], [0.0, 1.0, 0.0, 0.0], [8, 9])
    assert torch.equal(w.imag, -plain)


@pytest.mark.parametrize(
    "fill",
    [
        lambda t: init.orthogonal_(t, generator=gen(1)),
        lambda t: init.sparse_(t, 0.5, generator=gen(1)),
        lambda t: init.eye_(t),
        lambda t: init.trunc_normal_(t, generator=gen(1)),
        lambda t: init.uniform_(t, generator=gen(1)),
    ],
    ids=["orthogonal_", "sparse_", "eye_", "trunc_normal_", "uniform_"],
)
def test_every_op_on_a_neg_view_equals_the_plain_fill(fill):
    for _ in range(20):
        z = torch.zeros(5, 4, dtype=torch.complex64)
        fill(z.conj().imag)
        assert torch.equal(-z.imag, fill(torch.zeros(5, 4)))


def test_math_bit_view_errors_leave_it_untouched():
    z = torch.full((3,), 1 + 1j, dtype=torch.complex64)
    with pytest.raises(ValueError, match="std"):
        ops.normal_(z.conj().imag, 0.0, -1.0)
    assert (z == 1 + 1j).all()


# ---- fork after parallel fills -------------------------------------------------------------------

# The child compares with numpy: torch's own ops on large tensors open parallel regions, which
# hang in such a child whatever this project does.
_FORK_SCRIPT = textwrap.dedent(
    """
    import os, numpy as np, torch, torchinit_ext as init
    torch.set_num_threads(2)
    big = torch.empty(1 << 22)
    init.uniform_(big)                  # a parallel region of ours
    big.add_(1)                         # and one of torch's
    expected = init.normal_(torch.empty(1 << 20), generator=torch.Generator().manual_seed(5))
    pid = os.fork()
    if pid == 0:
        got = init.normal_(torch.empty(1 << 20), generator=torch.Generator().manual_seed(5))
        init.trunc_normal_(big)
        init.sparse_(torch.empty(512, 512), 0.5)
        os._exit(0 if np.array_equal(got.numpy(), expected.numpy()) else 3)
    _, status = os.waitpid(pid, 0)
    print("child exit", os.waitstatus_to_exitcode(status))
    """
)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_after_parallel_fills_completes_with_the_same_values():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [sys.executable, "-c", _FORK_SCRIPT], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    assert "child exit 0" in result.stdout


def _fill_in_worker(queue):
    filled = init.kaiming_uniform_(torch.empty(1024, 1024), generator=gen(7))
    queue.put(hashlib.sha256(filled.numpy().tobytes()).hexdigest())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_multiprocessing_fork_worker_fills_after_the_parent_did():
    init.uniform_(torch.empty(1 << 22))
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    worker = context.Process(target=_fill_in_worker, args=(queue,))
    worker.start()
    worker.join(timeout=60)
    if worker.is_alive():
        worker.kill()
        pytest.fail("the forked worker hung in its fill")
    expected = init.kaiming_uniform_(torch.empty(1024, 1024), generator=gen(7))
    assert queue.get(timeout=5) == hashlib.sha256(expected.numpy().tobytes()).hexdigest()


# ---- edge values of trunc_normal_ and uniform_ -----------------------------------------------


def _ks_pvalue(values, law):
    return stats.kstest(values.double().numpy(), law.cdf).pvalue


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "mean,std", [(0.0, 1e15), (0.0, 1e17), (0.0, 1e39), (1e30, 1e29), (-3.0, 1e300)]
)
def test_trunc_normal_with_a_std_far_larger_than_the_interval_is_uniform(dtype, mean, std):
    # The density varies by a factor below exp(1e-13) across [-2, 2]: the law is U(-2, 2).
    t = init.trunc_normal_(torch.empty(20000, dtype=dtype), mean, std, -2.0, 2.0, generator=gen(11))
    assert torch.isfinite(t).all() and t.min() >= -2 and t.max() <= 2
    assert t.unique().numel() > 19900
    assert _ks_pvalue(t, stats.uniform(-2, 4)) > 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_trunc_normal_with_a_huge_mean_takes_the_near_bound(dtype):
    # N(1e300, 1) truncated to [-2, 2] is 2 minus about 1e-300: the bound itself, in any dtype.
    t = init.trunc_normal_(torch.empty(1000, dtype=dtype), 1e300, 1.0, -2.0, 2.0, generator=gen(2))
    assert (t == 2.0).all()
    t = init.trunc_normal_(torch.empty(1000, dtype=dtype), -1e300, 1.0, -2.0, 2.0, generator=gen(2))
    assert (t == -2.0).all()


@pytest.mark.parametrize(
    "mean,std,a,b",
    [
        (0.0, 1e39, -3e38, 3e38),
        (1e39, 1e38, -3e38, 3e38),
        (100.0, 10.0, 0.0, 1e-3),
        (0.0, 5e38, -1e38, 2e38),
    ],
)
def test_trunc_normal_float32_beyond_float_range_parameters_follow_the_law(mean, std, a, b):
    t = init.trunc_normal_(torch.empty(20000), mean, std, a, b, generator=gen(4))
    assert torch.isfinite(t).all() and t.min() >= a and t.max() <= b
    law = stats.truncnorm((a - mean) / std, (b - mean) / std, loc=mean, scale=std)
    assert _ks_pvalue(t, law) > 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_trunc_normal_far_tails_keep_following_the_law(dtype):
    for a, b in [(40.0, 41.0), (-61.0, -60.0)]:
        t = init.trunc_normal_(torch.empty(20000, dtype=dtype), 0.0, 1.0, a, b, generator=gen(6))
        assert t.min() >= a and t.max() <= b
        assert _ks_pvalue(t, stats.truncnorm(a, b)) > 1e-3


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_uniform_whose_width_overflows_is_refused_as_in_stock(dtype):
    bound = 1e308 if dtype == torch.float64 else 3e38
    t = torch.zeros(4, dtype=dtype)
    with pytest.raises(RuntimeError, match="b - a overflows"):
        init.uniform_(t, -bound, bound)
    with pytest.raises(RuntimeError):
        torch.nn.init.uniform_(t, -bound, bound)
    assert (t == 0).all()


# ---- overlapping layouts ----------------------------------------------------------------------


def _overlapping():
    return torch.zeros(400 * 3 + 400).as_strided((400, 400), (3, 1))


@pytest.mark.parametrize(
    "fill",
    [
        init.uniform_,
        init.normal_,
        init.trunc_normal_,
        init.eye_,
        init.xavier_uniform_,
        lambda t: init.sparse_(t, 0.5),
        init.orthogonal_,
        lambda t: init.dirac_(t.unsqueeze(-1)),
    ],
    ids=[
        "uniform_",
        "normal_",
        "trunc_normal_",
        "eye_",
        "xavier_uniform_",
        "sparse_",
        "orthogonal_",
        "dirac_",
    ],
)
def test_elements_overlapping_through_as_strided_are_refused(fill):
    t = _overlapping()
    with pytest.raises(ValueError, match="share memory"):
        fill(t)
    assert (t == 0).all()


def test_as_strided_layouts_that_do_not_overlap_are_filled_in_logical_order():
    # Offsets {0, 2, 4, 3, 5, 7}: no two equal, though the strides are not nested.
    storage = torch.zeros(8)
    t = storage.as_strided((2, 3), (3, 2))
    init.normal_(t, generator=gen(9))
    assert torch.equal(t, init.normal_(torch.empty(2, 3), generator=gen(9)))
    assert storage[1] == 0 and storage[6] == 0


def test_constant_fills_of_overlapping_layouts_stay_allowed_as_in_stock():
    t = _overlapping()
    init.constant_(t, 2.5)
    assert (t == 2.5).all()


# ---- inference tensors ------------------------------------------------------------------------

INFERENCE_CALLS = {
    "uniform_": lambda t: init.uniform_(t),
    "normal_": lambda t: init.normal_(t),
    "trunc_normal_": lambda t: init.trunc_normal_(t),
    "constant_": lambda t: init.constant_(t, 3.0),
    "zeros_": lambda t: init.zeros_(t),
    "eye_": lambda t: init.eye_(t),
    "sparse_": lambda t: init.sparse_(t, 0.5),
    "orthogonal_": lambda t: init.orthogonal_(t),
    "fill_many_": lambda t: ops.fill_many_([t], ["normal"], [0.0, 1.0, 0.0, 0.0], [1, 2]),
    "dirac_": lambda t: ops.dirac_(t.view(4, 2, 2), 1),
}


@pytest.mark.parametrize("name", list(INFERENCE_CALLS))
def test_inference_tensors_refused_outside_inference_mode_as_in_stock(name):
    with torch.inference_mode():
        t = torch.full((4, 4), 9.0)
    with pytest.raises(
        RuntimeError, match="Inplace update to inference tensor outside InferenceMode"
    ):
        INFERENCE_CALLS[name](t)
    assert (t == 9.0).all()
    with torch.inference_mode():
        INFERENCE_CALLS[name](t)
    assert not (t == 9.0).all()


def test_normal_tensors_inside_inference_mode_are_filled_and_versioned():
    t = torch.zeros(8)
    version = t._version
    with torch.inference_mode():
        init.normal_(t, generator=gen(0))
    assert t._version > version
    assert torch.equal(t, init.normal_(torch.empty(8), generator=gen(0)))


# ---- tensors only stock fills: same results, same errors -------------------------------------


def _nested():
    return torch.nested.nested_tensor([torch.zeros(2, 3), torch.zeros(4, 3)])


ODD_TENSORS = {
    "sparse-coo": lambda: torch.zeros(4, 3).to_sparse(),
    "sparse-csr": lambda: torch.zeros(4, 3).to_sparse_csr(),
    "nested": _nested,
    "quantized": lambda: torch.quantize_per_tensor(torch.zeros(4, 3), 0.1, 0, torch.quint8),
    "float8_e4m3fn": lambda: torch.zeros(4, 3, dtype=torch.float8_e4m3fn),
    "float8_e5m2": lambda: torch.zeros(4, 3, dtype=torch.float8_e5m2),
    "uint16": lambda: torch.zeros(4, 3, dtype=torch.uint16),
    "uint32": lambda: torch.zeros(4, 3, dtype=torch.uint32),
    "int64": lambda: torch.zeros(4, 3, dtype=torch.int64),
    "bool": lambda: torch.zeros(4, 3, dtype=torch.bool),
    "complex64": lambda: torch.zeros(4, 3, dtype=torch.complex64),
}

FUNCTIONS = {
    "uniform_": lambda m, t: m.uniform_(t),
    "normal_": lambda m, t: m.normal_(t),
    "trunc_normal_": lambda m, t: m.trunc_normal_(t),
    "constant_": lambda m, t: m.constant_(t, 1.0),
    "ones_": lambda m, t: m.ones_(t),
    "zeros_": lambda m, t: m.zeros_(t),
    "eye_": lambda m, t: m.eye_(t),
    "xavier_uniform_": lambda m, t: m.xavier_uniform_(t),
    "kaiming_normal_": lambda m, t: m.kaiming_normal_(t),
    "orthogonal_": lambda m, t: m.orthogonal_(t),
    "sparse_": lambda m, t: m.sparse_(t, 0.5),
}
DETERMINISTIC = {"constant_", "ones_", "zeros_", "eye_"}


def _outcome(module, function, make):
    tensor = make()
    try:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            FUNCTIONS[function](module, tensor)
    except Exception as e:  # noqa: BLE001  (the outcome compared is the exception itself)
        return tensor, (type(e), str(e).split("\n")[0])
    return tensor, None


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("function", list(FUNCTIONS))
@pytest.mark.parametrize("kind", list(ODD_TENSORS))
def test_tensors_the_kernels_do_not_take_behave_as_in_stock(kind, function):
    ours, our_error = _outcome(init, function, ODD_TENSORS[kind])
    stock, stock_error = _outcome(torch.nn.init, function, ODD_TENSORS[kind])
    assert our_error == stock_error
    if our_error is None and function in DETERMINISTIC:
        dense = (lambda t: t.to_dense()) if ours.layout != torch.strided else (lambda t: t)
        if ours.is_nested:
            dense = lambda t: torch.cat([c.reshape(-1) for c in t.unbind()])  # noqa: E731
        elif ours.is_quantized:
            dense = lambda t: t.dequantize()  # noqa: E731
        assert torch.equal(dense(ours).float(), dense(stock).float())


# ---- TorchScript ------------------------------------------------------------------------------

SCRIPTABLE = {
    "uniform_": lambda f, t: f(t, -1.0, 2.0, gen(1)),
    "normal_": lambda f, t: f(t, 0.5, 2.0, gen(1)),
    "constant_": lambda f, t: f(t, 0.25),
    "ones_": lambda f, t: f(t),
    "zeros_": lambda f, t: f(t),
    "xavier_uniform_": lambda f, t: f(t, 1.5, gen(1)),
    "xavier_normal_": lambda f, t: f(t, 1.5, gen(1)),
}


@pytest.mark.parametrize("name", list(SCRIPTABLE))
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_functions_stock_lets_torchscript_compile_compile_too(name):
    scripted = torch.jit.script(getattr(init, name))
    got = SCRIPTABLE[name](scripted, torch.empty(6, 5))
    # Under TorchScript they run stock's code: stock's values for the same generator.
    expected = SCRIPTABLE[name](getattr(torch.nn.init, name), torch.empty(6, 5))
    assert torch.equal(got, expected)


def test_eager_calls_still_take_the_compiled_kernels():
    values = init.uniform_(torch.empty(1000), generator=gen(1))
    stock = torch.nn.init.uniform_(torch.empty(1000), generator=gen(1))
    assert not torch.equal(values, stock)


# ---- opcheck on odd layouts ------------------------------------------------------------------


def _neg_view(*shape):
    return torch.zeros(*shape, dtype=torch.complex64).conj().imag


ODD_LAYOUT_OPCHECKS = [
    ("constant_", lambda: (torch.zeros(6, 4)[::2, 1:], 1.5)),
    ("constant_", lambda: (_neg_view(3, 4), 1.5)),
    ("eye_", lambda: (torch.zeros(4, 6).t()[1:],)),
    ("eye_", lambda: (_neg_view(3, 3),)),
    ("dirac_", lambda: (torch.zeros(4, 2, 3).transpose(1, 2).transpose(1, 2), 2)),
    (
        "fill_many_",
        lambda: (
            [_neg_view(2, 3), torch.zeros(3, 5)[:, ::2]],
            ["constant", "uniform"],
            [0.5, 0, 0, 0, 0, 1, 0, 0],
            [1, 2, 3, 4],
            [],
            [],
        ),
    ),
    (
        "fill_many_",
        lambda: (
            [torch.zeros(0, 3), torch.zeros(())],
            ["normal", "trunc_normal"],
            [0, 1, 0, 0, 0, 1, -1, 1],
            [1, 2, 3, 4],
            [2, 3],
            [1, 0],
        ),
    ),
]


@pytest.mark.parametrize("name,make_args", ODD_LAYOUT_OPCHECKS)
def test_opcheck_on_odd_layouts(name, make_args):
    torch.library.opcheck(getattr(ops, name), make_args())
