"""The op table (csrc/plan/op_table.h, as _C.op_table()) is the library, and every list of ops,
laws and dtypes the Python layers keep is derived from it: an op, law or dtype added in one place
and not the other fails here."""

import re

import pytest
import torch

import torchinit_ext  # noqa: F401  (registers the ops)
from torchinit_ext import _C, _dispatch, _patch, _record

TABLE = {name: (schema, kind, law) for name, schema, kind, law in _C.op_table()}
REGISTERED = sorted(
    n.split("::")[1]
    for n in torch._C._dispatch_get_all_op_names()
    if n.startswith("torchinit_ext::")
)


def _op(name: str):
    return getattr(torch.ops.torchinit_ext, name).default


def test_every_registered_op_is_in_the_table_with_its_schema():
    assert sorted(TABLE) == REGISTERED
    for name, (schema, _, _) in TABLE.items():
        assert torch._C.parse_schema(f"torchinit_ext::{schema}") == _op(name)._schema, name


@pytest.mark.parametrize("name", sorted(TABLE))
def test_an_ops_kind_agrees_with_its_schema(name):
    schema, kind, law = TABLE[name]
    args = _op(name)._schema.arguments
    writes = [a.name for a in args if a.alias_info is not None and a.alias_info.is_write]
    assert kind in ("law", "whole", "batch", "helper")
    assert (kind == "helper") == (not writes)
    assert (law is not None) == (kind == "law")
    if kind in ("law", "whole"):
        assert writes == ["self"] and args[0].name == "self"
    if kind == "law":
        # fill_many_ passes four parameters per tensor, in the op's order.
        assert 1 <= len(_dispatch.law_parameters(_op(name))) <= 4


def test_the_python_lists_are_the_tables():
    laws = {law: _op(name) for name, (_, kind, law) in TABLE.items() if kind == "law"}
    assert laws == _dispatch.LAW_OPS
    assert {"constant", "uniform", "normal", "trunc_normal"} <= set(laws)
    whole = {_op(name) for name, (_, kind, _) in TABLE.items() if kind == "whole"}
    assert _record._WHOLE_FILLS == _dispatch.WHOLE_FILLS == whole
    for law, op in laws.items():
        assert _record._FILL_LAWS[op] == (law, _dispatch.law_parameters(op))
    assert _record._FILL_LAWS[_op("trunc_normal_")] == ("trunc_normal", ("mean", "std", "a", "b"))
    stock = {op: law for op, (law, _) in _record._FILL_LAWS.items() if op not in laws.values()}
    assert stock == _dispatch.STOCK_LAW_OPS
    aten = torch.ops.aten
    assert _record._FILL_LAWS[aten.uniform_.default] == ("uniform", ("from", "to"))
    assert _record._FILL_LAWS[aten.zero_.default] == ("constant", ())


def test_the_patched_methods_are_stocks_random_law_ops():
    assert {
        "uniform_": (_dispatch.uniform, "from", "to", 0.0, 1.0),
        "normal_": (_dispatch.normal, "mean", "std", 0.0, 1.0),
    } == _patch._METHODS


def test_the_dtype_sets():
    floats = {torch.float16, torch.bfloat16, torch.float32, torch.float64}
    assert floats == _dispatch.FLOAT_DTYPES and len(_C.float_dtypes()) == 4
    others = {torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64}
    others |= {torch.complex64, torch.complex128}
    assert floats | others == _dispatch.FILL_DTYPES and len(_C.fill_dtypes()) == 12


@pytest.mark.parametrize("dtype", sorted(_dispatch.FILL_DTYPES, key=str))
def test_the_compiled_predicate_follows_the_dtype_sets(dtype):
    t = torch.empty(3, dtype=dtype)
    assert _dispatch.compiled(t) == (dtype in _dispatch.FLOAT_DTYPES)
    assert _dispatch.compiled(t, _dispatch.FILL_DTYPES)
    assert _dispatch.compiled(torch.nn.Parameter(t, requires_grad=False), _dispatch.FILL_DTYPES)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_the_compiled_predicate_refuses_what_stock_must_fill():
    class Sub(torch.Tensor):
        pass

    assert _dispatch.compiled(torch.empty(2, 2, device="meta"))
    assert "cpu" in _dispatch.COMPILED_DEVICES and "meta" in _dispatch.COMPILED_DEVICES
    for other in (
        torch.empty(2, 2).as_subclass(Sub),
        torch.empty(2, 2).to_sparse(),
        torch.nested.nested_tensor([torch.empty(2), torch.empty(3)]),
        torch.empty(2, dtype=torch.float8_e4m3fn),
        torch.empty(2, dtype=torch.uint16),
        [1.0],
        None,
    ):
        assert not _dispatch.compiled(other)
        assert not _dispatch.compiled(other, _dispatch.FILL_DTYPES)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_the_compiled_predicate_traced_by_dynamo_is_cs(monkeypatch):
    """Dynamo traces compiled() spelled out in Python; eager runs _C's, which the lean entries
    and fill_extent use. They agree."""

    class Sub(torch.Tensor):
        pass

    tensors = [torch.empty(2, 3, dtype=d) for d in _dispatch.FILL_DTYPES]
    tensors += [torch.empty(2, 3, device="meta"), torch.empty(3, 2).t(), torch.empty(0)]
    tensors += [torch.nn.Parameter(torch.empty(2)), torch.nn.Buffer(torch.empty(2))]
    tensors += [torch.empty(2).as_subclass(Sub), torch.empty(2, 2).to_sparse()]
    tensors += [torch.nested.nested_tensor([torch.empty(2), torch.empty(3)])]
    tensors += [torch.empty(2, dtype=torch.float8_e5m2), torch.empty(2, dtype=torch.uint32)]
    eager = [(_dispatch.compiled(t), _dispatch.compiled(t, _dispatch.FILL_DTYPES)) for t in tensors]
    assert [c for c, _ in eager] == [_C.fill_extent(t) is not None for t in tensors]
    monkeypatch.setattr(_dispatch, "is_dynamo_compiling", lambda: True)
    traced = [
        (_dispatch.compiled(t), _dispatch.compiled(t, _dispatch.FILL_DTYPES)) for t in tensors
    ]
    assert traced == eager


def test_an_unknown_law_names_the_tables_laws():
    """In the table's order: "(expected constant, uniform, normal or trunc_normal)"."""
    laws = [law for _, _, kind, law in _C.op_table() if kind == "law"]
    expected = f"(expected {', '.join(laws[:-1])} or {laws[-1]})"
    t = torch.empty(3)
    with pytest.raises(ValueError, match=re.escape(expected)):
        torch.ops.torchinit_ext.fill_many_([t], ["gamma"], [0.0] * 4, [1, 2])
