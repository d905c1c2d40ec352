"""The lean entries of _C (csrc/registration/python_fast_path.cpp): taken for plain float tensors,
with the op path's values, errors, autograd and version semantics, and never where a mode or dynamo
must see the op."""

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import torchinit_ext as init
from tests.helpers.common import ops
from torchinit_ext import _C, _dispatch, _session

FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
LEAN = {"uniform_": _C.uniform_, "normal_": _C.normal_}
OPS = {"uniform_": ops.uniform_.default, "normal_": ops.normal_.default}


def _make(kind, shape=(4, 768), dtype=torch.float32):
    t = torch.empty(shape, dtype=dtype)
    return torch.nn.Parameter(t) if kind == "parameter" else t


@pytest.mark.parametrize("kind", ["tensor", "parameter"])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", ["uniform_", "normal_"])
@pytest.mark.parametrize("seeded", [False, True])
def test_lean_fill_equals_the_op_bit_for_bit(kind, dtype, name, seeded):
    def generator():
        if seeded:
            return torch.Generator().manual_seed(7)
        torch.manual_seed(7)
        return None

    lean, reference = _make(kind, dtype=dtype), _make(kind, dtype=dtype)
    assert LEAN[name](lean, -0.5, 2, generator()) is True
    with torch.no_grad():
        OPS[name](reference, -0.5, 2.0, generator())
    assert torch.equal(lean, reference)


@pytest.mark.parametrize("kind", ["tensor", "parameter"])
def test_public_functions_take_the_lean_path(kind, monkeypatch):
    taken = []
    for name, entry in (("uniform_", _C.uniform_), ("normal_", _C.normal_), ("fill_", _C.fill_)):
        monkeypatch.setattr(
            _C, name, lambda *args, entry=entry, name=name: taken.append(name) or entry(*args)
        )
    t = _make(kind, (1, 768))
    for fn in (init.uniform_, init.normal_, init.kaiming_uniform_, init.xavier_normal_):
        assert fn(t) is t
    assert init.zeros_(t) is t and init.constant_(t, 0.25) is t
    assert taken == ["uniform_", "normal_", "uniform_", "normal_", "fill_", "fill_"]
    assert torch.equal(t, torch.full_like(t, 0.25))


def test_grad_mode_and_versions_as_the_op_path():
    p = torch.nn.Parameter(torch.empty(16))
    version = p._version
    assert torch.is_grad_enabled()
    init.uniform_(p)
    init.zeros_(p)
    assert torch.is_grad_enabled() and p.requires_grad and p.grad_fn is None
    assert p._version == version + 2


_SUBCLASS = type("Sub", (torch.Tensor,), {})


@pytest.mark.parametrize(
    "make",
    [
        # Known values, not torch.empty's: uninitialized memory may hold NaNs, never equal.
        lambda: torch.tensor([1.0, 2.0, 3.0, 4.0]).as_subclass(_SUBCLASS),
        lambda: torch.tensor([1, 2, 3, 4], dtype=torch.int32),
        lambda: torch.tensor([1, 2, 3, 4], dtype=torch.complex64),
        lambda: torch.tensor([1.0, 0.0, 3.0, 4.0]).to_sparse(),
    ],
)
def test_lean_entries_leave_other_tensors_to_the_python_path(make):
    t = make()
    before = t.clone()
    assert _C.uniform_(t, 0.0, 1.0, None) is False
    assert _C.normal_(t, 0.0, 1.0, None) is False
    assert _C.fill_(t, 0.5) is False
    assert torch.equal(t.to_dense(), before.to_dense())


@pytest.mark.parametrize(
    "args",
    [
        (True, 1.0, None),
        (np.float64(0.0), 1.0, None),
        (0.0, torch.tensor(1.0), None),
        (0.0, 2**1100, None),
        (0.0, 1.0, 0),
    ],
)
def test_lean_entries_leave_other_arguments_to_the_python_path(args):
    t = torch.full((4,), 3.0)
    assert _C.uniform_(t, *args) is False
    assert torch.equal(t, torch.full((4,), 3.0))


def test_fill_leaves_bools_huge_ints_and_inference_tensors():
    t = torch.full((4,), 3.0)
    for value in (True, 2**70, np.float32(1.0)):
        assert _C.fill_(t, value) is False
    with torch.inference_mode():
        inference = torch.empty(4)
    assert _C.fill_(inference, 0.0) is False
    assert torch.equal(t, torch.full((4,), 3.0))


@pytest.mark.parametrize(
    "name,args", [("uniform_", (1.0, 0.0)), ("normal_", (0.0, -1.0)), ("uniform_", (0.0, 1e309))]
)
def test_errors_as_the_op_path(name, args, monkeypatch):
    with pytest.raises(Exception) as lean:
        getattr(init, name)(torch.empty(8), *args)
    monkeypatch.setattr(_dispatch, "_lean", lambda *_: False)
    with pytest.raises(Exception) as op_path:
        getattr(init, name)(torch.empty(8), *args)
    assert type(lean.value) is type(op_path.value) is init.InitValueError
    assert str(lean.value) == str(op_path.value)


def test_inference_tensor_error_as_the_op_path():
    with torch.inference_mode():
        t = torch.empty(4)
    with pytest.raises(RuntimeError) as lean:
        _C.uniform_(t, 0.0, 1.0, None)
    with pytest.raises(RuntimeError) as op_path:
        ops.uniform_.default(t, 0.0, 1.0, None)
    assert str(lean.value) == str(op_path.value)


class _Recorded(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append((func, args[1:], kwargs))
        return func(*args, **(kwargs or {}))


def _recorded_calls():
    t = torch.empty(3, 5)
    with _Recorded() as mode:
        init.kaiming_normal_(t)
        init.uniform_(t, -1, 2)
        init.zeros_(t)
    return mode.calls


def test_dispatch_modes_see_the_op_path_calls(monkeypatch):
    lean = _recorded_calls()
    assert [func for func, _, _ in lean] == [
        ops.normal_.default,
        ops.uniform_.default,
        torch.ops.aten.fill_.Scalar,
    ]
    monkeypatch.setattr(_dispatch, "_lean", lambda *_: False)
    monkeypatch.setattr(_C, "fill_", lambda *_: False)
    assert lean == _recorded_calls()


def test_torch_function_modes_see_the_op_path():
    seen = []

    class Mode(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(func)
            return func(*args, **(kwargs or {}))

    t = torch.empty(3, 5)
    assert _C.uniform_(t, 0.0, 1.0, None) is True
    with Mode():
        assert _C.uniform_(t, 0.0, 1.0, None) is False
        init.kaiming_normal_(t)
    assert ops.normal_.default in seen


def test_dynamo_traces_the_op():
    graphs = []

    def backend(gm, _):
        graphs.append(gm)
        return gm

    @torch.compile(backend=backend, fullgraph=True)
    def build(t):
        return init.uniform_(t, -1.0, 1.0)

    t = torch.empty(64)
    build(t)
    targets = [node.target for node in graphs[0].graph.nodes if node.op == "call_function"]
    assert ops.uniform_.default in targets


@pytest.mark.parametrize("seeded", [False, True])
def test_lean_state_draw_equals_the_op_and_is_unseen_by_dispatch_modes(seeded):
    """materialize() draws a Philox state per deferred fill through _C.philox_state: the op's (key,
    offset), advancing the generator as the op does, without its dispatch mode paying for a call
    that reads no element."""

    def generator():
        if seeded:
            return torch.Generator().manual_seed(11)
        torch.manual_seed(11)
        return None

    class Seen(TorchDispatchMode):
        calls = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.calls.append(func)
            return func(*args, **(kwargs or {}))

    t = torch.empty(3)
    g = generator()
    with Seen():
        lean = [_C.philox_state(t, g) for _ in range(3)]
    g = generator()
    reference = [ops.philox_state(t, g) for _ in range(3)]
    assert lean == reference and len({tuple(k) for k in lean}) == 3
    assert Seen.calls == []
    with pytest.raises(TypeError, match="philox_state: expected a torch.Generator"):
        _C.philox_state(t, 3)
    with pytest.raises(TypeError, match="philox_state: expected a Tensor"):
        _C.philox_state([1.0], None)


def test_new_fill_targets_make_the_geometries_and_draw_as_philox_state_does():
    """A replay of whole fills alone (model._made_by_whole_writes) makes its tensors and draws
    their states through _C.new_fill_targets: each geometry (_record._Ref's fields) as new memory,
    the states those of philox_state one by one, in order, none drawn where not asked."""
    geometries = [
        (0, torch.float32, (3, 5), (5, 1), 0),
        (0, torch.bfloat16, (4, 2, 3, 3), (18, 1, 6, 2), 0),  # channels last
        (0, torch.float64, (7,), (1,), 0),
    ]
    torch.manual_seed(11)
    tensors, states = _C.new_fill_targets(geometries, torch.device("cpu"), [True, False, True])
    after = torch.rand(2)
    for (_, dtype, size, stride, _), t in zip(geometries, tensors):
        assert (t.dtype, tuple(t.shape), t.stride(), type(t)) == (dtype, size, stride, torch.Tensor)
    torch.manual_seed(11)
    assert states == [_C.philox_state(tensors[0], None), (0, 0), _C.philox_state(tensors[2], None)]
    assert torch.equal(torch.rand(2), after)
    # A dtype the compiled fills don't take: None, and nothing drawn.
    torch.manual_seed(11)
    ints = [(0, torch.float32, (2,), (1,), 0), (0, torch.int64, (2,), (1,), 0)]
    assert _C.new_fill_targets(ints, torch.device("cpu"), [True, True]) is None
    untouched = torch.rand(2)
    torch.manual_seed(11)
    assert torch.equal(untouched, torch.rand(2))
    with pytest.raises(TypeError, match="new_fill_targets: expected a torch.device"):
        _C.new_fill_targets(geometries, "cpu", [True] * 3)
    with pytest.raises(ValueError, match="expected a draw for each geometry"):
        _C.new_fill_targets(geometries, torch.device("cpu"), [True])
    with pytest.raises(TypeError, match="expected \\(storage, dtype, sizes, strides, offset\\)"):
        _C.new_fill_targets([(0, "float", (2,), (1,), 0)], torch.device("cpu"), [True])


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.empty(3, 5),
        lambda: torch.nn.Parameter(torch.empty(4, 6, dtype=torch.bfloat16)),
        lambda: torch.empty(6, 4, dtype=torch.float64).t(),
        lambda: torch.empty(8, 8, dtype=torch.float16)[2:, 1::3],
        lambda: torch.empty(0, 3),
        lambda: torch.empty(2, 3, device="meta"),
    ],
)
def test_fill_extent_is_the_extent_of_a_tensor_the_compiled_fills_take(make):
    """materialize() asks _C.fill_extent of every tensor a known reset fills: compiled() and
    extent() in one call, equal (and hashed equal, as a dict key) to the Python pair's."""
    t = make()
    assert _dispatch.compiled(t)
    where = _C.fill_extent(t)
    assert where == _session.extent(t)
    assert hash(where) == hash(_session.extent(t))
    assert (where[0] == 0) == (t.numel() == 0 or t.is_meta)


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.tensor([1.0, 2.0]).as_subclass(_SUBCLASS),
        lambda: torch.tensor([1, 2], dtype=torch.int32),
        lambda: torch.tensor([1, 2], dtype=torch.complex64),
        lambda: torch.tensor([1.0, 0.0]).to_sparse(),
        lambda: torch.nested.nested_tensor([torch.ones(2), torch.ones(3)]),
        lambda: [1.0, 2.0],
    ],
)
def test_fill_extent_is_none_where_the_compiled_fills_do_not_take_it(make):
    value = make()
    assert not (isinstance(value, torch.Tensor) and _dispatch.compiled(value))
    assert _C.fill_extent(value) is None
