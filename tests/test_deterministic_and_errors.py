"""Deterministic fills equal stock exactly; bad input is refused before anything is written."""

import math

import pytest
import torch
import torch.nn.init as stock

import torchinit_ext as init
from tests.helpers.common import ops

DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.uint8,
    torch.bool,
    torch.complex64,
]


def _both(fn_name, make, *args):
    mine, theirs = make(), make()
    getattr(init, fn_name)(mine, *args)
    getattr(stock, fn_name)(theirs, *args)
    return mine, theirs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (4, 4), (1, 7), (300, 200)])
def test_eye_equals_stock(dtype, shape):
    mine, theirs = _both("eye_", lambda: torch.full(shape, 3).to(dtype))
    assert torch.equal(mine, theirs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape,groups",
    [
        ((6, 4, 3), 2),
        ((8, 3, 3, 5), 4),
        ((4, 6, 3, 3, 3), 2),
        ((5, 5, 1), 1),
        ((512, 512, 3, 3), 1),
        ((64, 16, 5, 5), 8),
    ],
)
def test_dirac_equals_stock(dtype, shape, groups):
    mine, theirs = _both("dirac_", lambda: torch.full(shape, 3).to(dtype), groups)
    assert torch.equal(mine, theirs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "fn,args", [("constant_", (0.3,)), ("constant_", (2,)), ("ones_", ()), ("zeros_", ())]
)
def test_constant_fills_equal_stock(dtype, fn, args):
    mine, theirs = _both(fn, lambda: torch.full((257, 129), 3).to(dtype), *args)
    assert torch.equal(mine, theirs)


@pytest.mark.parametrize("fn,args", [("eye_", ()), ("dirac_", ()), ("constant_", (1.5,))])
def test_deterministic_fills_on_views(fn, args):
    shape = (12, 10, 3) if fn == "dirac_" else (12, 10)
    base_m, base_s = torch.full(shape, 7.0), torch.full(shape, 7.0)
    getattr(init, fn)(base_m.transpose(0, 1)[1:, ::2] if fn != "dirac_" else base_m[::2], *args)
    getattr(stock, fn)(base_s.transpose(0, 1)[1:, ::2] if fn != "dirac_" else base_s[::2], *args)
    assert torch.equal(base_m, base_s)


def test_constant_on_expanded_tensor_like_stock():
    mine, theirs = _both("constant_", lambda: torch.zeros(3, 1).expand(3, 4), 2.0)
    assert torch.equal(mine, theirs)


def _expanded():
    return torch.zeros(4, 1).expand(4, 6)


BAD_INPUT = [  # (call, error type, words the message must contain)
    (lambda t: init.normal_(t, std=-1.0), ValueError, "std"),
    (lambda t: init.normal_(t, std=math.nan), ValueError, "std"),
    (lambda t: init.uniform_(t, 1.0, 0.0), ValueError, "a <= b"),
    (lambda t: init.uniform_(t, math.nan, 1.0), ValueError, "a="),
    (lambda t: init.uniform_(t, 0.0, math.inf), ValueError, "b="),
    (lambda t: init.trunc_normal_(t, std=-0.1), ValueError, "std"),
    (lambda t: init.trunc_normal_(t, std=0.0), ValueError, "std"),
    (lambda t: init.trunc_normal_(t, a=1.0, b=-1.0), ValueError, "a <= b"),
    (lambda t: init.sparse_(t, -0.5), ValueError, "sparsity"),
    (lambda t: init.sparse_(t, 1.5), ValueError, "sparsity"),
    (lambda t: init.sparse_(t, math.nan), ValueError, "sparsity"),
    (lambda t: init.dirac_(t.view(4, 2, 3), groups=0), ValueError, "groups"),
    (lambda t: init.dirac_(t.view(4, 2, 3), groups=-2), ValueError, "groups"),
    (lambda t: init.normal_(t.to(torch.int64)), NotImplementedError, "Long"),
]


@pytest.mark.parametrize("call,error,words", BAD_INPUT)
def test_bad_input_raises_and_leaves_tensor_untouched(call, error, words):
    t = torch.arange(24.0).reshape(4, 6)
    before = t.clone()
    with pytest.raises(error, match=words):
        call(t)
    assert torch.equal(t, before)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool, torch.uint8])
@pytest.mark.parametrize(
    "fill",
    [init.uniform_, init.normal_, init.trunc_normal_, init.xavier_uniform_, init.kaiming_normal_],
)
def test_integer_tensors_get_stocks_error_for_random_fills(dtype, fill):
    t = torch.ones(4, 6, dtype=dtype)
    with pytest.raises((NotImplementedError, RuntimeError)) as ours:
        fill(t)
    assert (t == 1).all()
    with pytest.raises((NotImplementedError, RuntimeError)) as theirs:
        getattr(stock, fill.__name__)(t)
    assert type(ours.value) is type(theirs.value) and str(ours.value) == str(theirs.value)


def test_the_ops_themselves_refuse_integer_tensors_as_init_type_errors():
    t = torch.ones(4, 6, dtype=torch.int64)
    with pytest.raises(TypeError, match="tensor must be float16, bfloat16, float32 or float64"):
        ops.normal_(t, 0.0, 1.0)
    assert (t == 1).all()


@pytest.mark.parametrize(
    "fill", [init.uniform_, init.normal_, init.xavier_normal_, init.kaiming_uniform_, init.eye_]
)
def test_internal_overlap_refused(fill):
    t = _expanded()
    with pytest.raises(ValueError, match="share memory"):
        fill(t)
    assert (t == 0).all()


def test_argument_errors_are_also_runtime_errors_as_in_stock():
    with pytest.raises(RuntimeError):
        init.normal_(torch.empty(3), std=-1.0)
    with pytest.raises(RuntimeError):
        init.uniform_(torch.empty(3), 2.0, 1.0)


def test_uniform_bounds_checked_against_dtype():
    t = torch.zeros(5, dtype=torch.float16)
    with pytest.raises(ValueError, match="b=1e\\+06"):
        init.uniform_(t, 0.0, 1e6)
    assert (t == 0).all()


def test_constant_overflow_refused_before_write():
    t = torch.zeros(5, dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="overflow"):
        init.constant_(t, 300)
    assert (t == 0).all()


OPCHECK_CASES = [
    ("uniform_", lambda: (torch.empty(5, 7), -1.0, 2.0, None)),
    ("normal_", lambda: (torch.empty(5, 7).t(), 0.5, 2.0, None)),
    ("trunc_normal_", lambda: (torch.empty(5, 7, dtype=torch.bfloat16), 0.0, 1.0, -0.3, 0.3, None)),
    ("sparse_", lambda: (torch.empty(5, 7).t(), 0.6, 0.01, None)),
    ("constant_", lambda: (torch.empty(5, 7, dtype=torch.float64), 0.25)),
    ("eye_", lambda: (torch.empty(5, 7),)),
    ("dirac_", lambda: (torch.empty(6, 3, 3, 3), 2)),
    ("orthogonal_", lambda: (torch.empty(5, 7).t(), 2.0, None)),
    ("orthogonal_batch_", lambda: (torch.empty(3, 6, 2, 2, dtype=torch.float64), 1.0, None)),
    (
        "fill_many_",
        lambda: (
            [torch.empty(5, 7).t(), torch.empty(4, dtype=torch.bfloat16)],
            ["normal", "trunc_normal"],
            [0.0, 1.0, 0.0, 0.0, 0.0, 1.0, -1.0, 1.0],
            [1, 2, 3, -4],
            [9, 5, 6],
            [2, 0, 1],
        ),
    ),
]


@pytest.mark.parametrize("name,make_args", OPCHECK_CASES)
def test_opcheck(name, make_args):
    op = getattr(torch.ops.torchinit_ext, name)
    # Random ops are checked with the deterministic tests only: opcheck replays calls and
    # compares outputs, and each call draws fresh values.
    tests = ("test_schema", "test_autograd_registration", "test_faketensor")
    if name in (
        "eye_",
        "dirac_",
        "constant_",
        "fill_many_",
    ):  # fill_many_ takes explicit Philox states
        tests += ("test_aot_dispatch_dynamic",)
    torch.library.opcheck(op, make_args(), test_utils=tests)
