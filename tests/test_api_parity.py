"""torchinit_ext is a drop-in for torch.nn.init: names, signatures, errors, warnings, returns."""

import inspect
import math
import warnings

import pytest
import torch
import torch.nn.init as stock

import torchinit_ext as init

PUBLIC = [n for n in stock.__all__ if n.endswith("_") or n == "calculate_gain"]
DEPRECATED = [n for n in stock.__all__ if n not in PUBLIC]


def test_all_names_exported():
    assert len(PUBLIC) == 15 and len(DEPRECATED) == 11
    for name in stock.__all__ + ["_calculate_fan_in_and_fan_out", "_calculate_correct_fan"]:
        assert callable(getattr(init, name)), name


@pytest.mark.parametrize(
    "name", PUBLIC + ["_calculate_fan_in_and_fan_out", "_calculate_correct_fan"]
)
def test_signature_matches_stock(name):
    assert inspect.signature(getattr(init, name)) == inspect.signature(getattr(stock, name))


@pytest.mark.parametrize("name", DEPRECATED)
def test_deprecated_alias_warns_and_forwards(name):
    params = [p.kind for p in inspect.signature(getattr(init, name)).parameters.values()]
    assert params == [p.kind for p in inspect.signature(getattr(stock, name)).parameters.values()]
    x = torch.empty(4, 3, 3) if name == "dirac" else torch.empty(4, 6)
    args = {"constant": (0.5,), "sparse": (0.5,)}.get(name, ())
    with pytest.warns(
        FutureWarning, match=rf"`nn.init.{name}` is now deprecated in favor of `nn.init.{name}_`"
    ):
        out = getattr(init, name)(x, *args)
    assert out is x


FILLS = [
    ("uniform_", (), (2, 3)),
    ("normal_", (), (2, 3)),
    ("trunc_normal_", (), (2, 3)),
    ("constant_", (0.25,), (2, 3)),
    ("ones_", (), (2, 3)),
    ("zeros_", (), (2, 3)),
    ("eye_", (), (2, 3)),
    ("dirac_", (), (4, 2, 3)),
    ("xavier_uniform_", (), (2, 3)),
    ("xavier_normal_", (), (2, 3)),
    ("kaiming_uniform_", (), (2, 3)),
    ("kaiming_normal_", (), (2, 3)),
    ("orthogonal_", (), (2, 3)),
    ("sparse_", (0.5,), (2, 3)),
]


@pytest.mark.parametrize("name,args,shape", FILLS)
def test_returns_same_object_without_autograd(name, args, shape):
    w = torch.nn.Parameter(torch.zeros(shape))
    version = w._version
    out = getattr(init, name)(w, *args)
    assert out is w
    assert w.grad_fn is None and w.requires_grad and w.is_leaf
    assert w._version > version  # autograd sees the in-place write


@pytest.mark.parametrize("name,args,shape", FILLS)
def test_meta_tensors_are_a_noop(name, args, shape):
    w = torch.empty(shape, device="meta")
    assert getattr(init, name)(w, *args) is w


@pytest.mark.parametrize("name,args,shape", FILLS)
def test_zero_element_tensors_like_stock(name, args, shape):
    shape = (0,) + shape[1:]
    mine, theirs = torch.empty(shape), torch.empty(shape)
    errors = []
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        for fn, t in ((getattr(init, name), mine), (getattr(stock, name), theirs)):
            try:
                errors.append(fn(t, *args) is t)
            except Exception as e:
                errors.append(type(e))
    assert errors[0] == errors[1]
    assert [str(w.message) for w in got[: len(got) // 2]] == [
        str(w.message) for w in got[len(got) // 2 :]
    ]


STOCK_VALUE_ERRORS = [
    ("eye_", (torch.empty(3),), {}),
    ("eye_", (torch.empty(2, 2, 2),), {}),
    ("dirac_", (torch.empty(3, 3),), {}),
    ("dirac_", (torch.empty(3, 3, 3, 3, 3, 3),), {}),
    ("dirac_", (torch.empty(5, 3, 3),), {"groups": 2}),
    ("xavier_uniform_", (torch.empty(3),), {}),
    ("xavier_normal_", (torch.empty(3),), {}),
    ("kaiming_uniform_", (torch.empty(3, 3),), {"mode": "fan_avg"}),
    ("kaiming_normal_", (torch.empty(3, 3),), {"nonlinearity": "softmax"}),
    ("kaiming_uniform_", (torch.empty(3, 3),), {"nonlinearity": "leaky_relu", "a": "x"}),
    ("orthogonal_", (torch.empty(3),), {}),
    ("sparse_", (torch.empty(3, 3, 3), 0.5), {}),
    ("calculate_gain", ("softmax",), {}),
]


@pytest.mark.parametrize("name,args,kwargs", STOCK_VALUE_ERRORS)
def test_stock_value_errors_identical(name, args, kwargs):
    with pytest.raises(ValueError) as theirs:
        getattr(stock, name)(
            *[a.clone() if isinstance(a, torch.Tensor) else a for a in args], **kwargs
        )
    with pytest.raises(ValueError) as mine:
        getattr(init, name)(*args, **kwargs)
    assert str(mine.value) == str(theirs.value)


def test_trunc_normal_warns_like_stock():
    with pytest.warns(UserWarning, match="mean is more than 2 std from"):
        init.trunc_normal_(torch.empty(10), mean=5.0, std=1.0, a=-1.0, b=1.0)


def test_calculate_gain_values():
    assert init.calculate_gain("relu") == math.sqrt(2.0)
    assert init.calculate_gain("leaky_relu", 0.2) == stock.calculate_gain("leaky_relu", 0.2)
    assert init.calculate_gain("tanh") == 5.0 / 3


class _Logged(torch.Tensor):
    calls = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.calls.append(func)
        return super().__torch_function__(func, types, args, kwargs or {})


@pytest.mark.parametrize("name", ["uniform_", "normal_", "constant_", "kaiming_uniform_"])
def test_torch_function_dispatches_like_stock(name):
    t = torch.empty(3, 4).as_subclass(_Logged)
    _Logged.calls.clear()
    args = (0.5,) if name == "constant_" else ()
    out = getattr(init, name)(t, *args)
    assert out is t
    assert _Logged.calls[0] is getattr(init, name)


def test_subclass_and_complex_fall_back_to_stock():
    z = torch.zeros(64, dtype=torch.complex64)
    init.normal_(z)
    assert (z.imag != 0).any()
    torch.manual_seed(0)
    a = init.uniform_(torch.empty(5, dtype=torch.complex64))
    torch.manual_seed(0)
    b = torch.empty(5, dtype=torch.complex64).uniform_()
    assert torch.equal(a, b)
