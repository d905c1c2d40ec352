"""One rank of the sharded-init tests (tests/test_sharded.py starts world_size of these):
every check compares a DTensor's full_tensor() with the single-process result, bit for bit.

usage: python sharded_worker.py RANK WORLD_SIZE STORE_FILE
"""

import itertools
import os
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import Replicate, Shard, distribute_tensor
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

import torchinit_ext as ti

try:
    from torch.distributed.tensor.placement_types import _StridedShard
except ImportError:  # (private: it may go)
    _StridedShard = None

FILLS = {
    "uniform_": lambda t: ti.uniform_(t, -2, 3),
    "normal_": lambda t: ti.normal_(t, 0.5, 2),
    "trunc_normal_": lambda t: ti.trunc_normal_(t, std=0.02),
    "constant_": lambda t: ti.constant_(t, 0.25),
    "ones_": ti.ones_,
    "zeros_": ti.zeros_,
    "xavier_normal_": ti.xavier_normal_,
    "kaiming_uniform_": ti.kaiming_uniform_,
    "orthogonal_": ti.orthogonal_,
    "sparse_": lambda t: ti.sparse_(t, 0.5),
    "eye_": ti.eye_,
}


def distribute(tensor, mesh, placements):
    """`tensor`, the same on every rank, as a DTensor: each rank keeps its slice, with no scatter
    (torch 2.13's scatter refuses an uneven _StridedShard)."""
    return distribute_tensor(tensor, mesh, placements, src_data_rank=None)


def fill_in_turn(make, shape) -> tuple[dict, torch.Tensor]:
    """Each of FILLS on its own make(zeros(shape)), in turn from one seed: the tensors by fill,
    and the generator's state after the last."""
    torch.manual_seed(0)
    tensors = {name: fill(make(torch.zeros(shape))) for name, fill in FILLS.items()}
    return tensors, torch.get_rng_state()


def build_model():
    return nn.Sequential(
        nn.Embedding(50, 16),  # 50 rows: uneven shards on 4 ranks
        nn.TransformerEncoderLayer(16, 2, 32, batch_first=True),
        nn.LayerNorm(16),
        nn.Linear(16, 50),
    )


def build_tied_model():
    model = build_model()
    model[3].weight = model[0].weight  # the output layer shares the embedding (GPT-2's tie)
    return model


def build_recorded_model():
    """A model whose constructor writes its own values: a re-init (one fill, so each rank fills
    its shard), and tensors replayed whole, then sliced: an orthogonal_ (not elementwise), a
    fill of part of a tensor, and a parameter computed by arithmetic."""
    model = build_model()
    nn.init.normal_(model[0].weight, std=0.02)
    nn.init.orthogonal_(model[3].weight)
    nn.init.normal_(model[1].linear1.weight[:, :4], std=3.0)
    model.scale = nn.Parameter(torch.ones(16) * 0.5 + torch.arange(16.0))
    return model


def materialized(seed=None, shard=None, build=build_model, deferred=False):
    if deferred:
        model = ti.deferred_init(build)
    else:
        with torch.device("meta"):
            model = build()
    if shard is not None:
        shard(model)
    return ti.materialize(model, device="cpu", seed=seed)


def reset_in_place(shard=None):
    """torchtitan's way: the model built on meta, sharded, given storage by to_empty(), and its
    layers' own init run under patched() from one seed."""
    with torch.device("meta"):
        model = build_model()
    if shard is not None:
        shard(model)
    model.to_empty(device="cpu")
    torch.manual_seed(5)
    with ti.patched(), torch.no_grad():
        for module in model.modules():
            for reset in ("_reset_parameters", "reset_parameters"):  # MultiheadAttention: the first
                if hasattr(module, reset):
                    getattr(module, reset)()
                    break
    return model


def fsdp_over_tensor_parallel(mesh, recorded: dict) -> list[str]:
    """FSDP2 over tensor parallel on a 2-D mesh, as torchtitan shards: a column-parallel weight
    that FSDP2 shards again on the same dim has placements (_StridedShard, Shard) in torch 2.13,
    a shard that fill_many_ cannot number. Its values must still be the single-device ones:
    reset in place under patched(), and materialized from meta and replayed, with and without a
    seed."""

    def shard(model):
        plan = {"3": ColwiseParallel(), "1.linear1": ColwiseParallel()}
        parallelize_module(model, mesh["tp"], {**plan, "1.linear2": RowwiseParallel()})
        fully_shard(model, mesh=mesh["dp"])

    bad = mismatches(reset_in_place(shard), reset_in_place())
    failures = [f"fsdp2 over tp reset in place: {n}" for n in bad]
    for way, kwargs in [("meta", {}), ("deferred", recorded)]:
        for seed in (None, 7):
            torch.manual_seed(3)
            reference = materialized(seed=seed, **kwargs)
            torch.manual_seed(3)
            bad = mismatches(materialized(seed=seed, shard=shard, **kwargs), reference)
            failures += [f"{way} fsdp2 over tp seed={seed}: {n}" for n in bad]
    return failures


def mismatches(model, reference):
    full = {
        n: p.full_tensor() if hasattr(p, "full_tensor") else p for n, p in model.named_parameters()
    }
    return [n for n, p in reference.named_parameters() if not torch.equal(full[n], p)]


def main(rank: int, world_size: int, store: str) -> int:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    meshes = {"1d": init_device_mesh("cpu", (world_size,))}
    if world_size == 4:
        meshes["2d"] = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))
    layouts = [("1d", [Shard(0)]), ("1d", [Shard(1)]), ("1d", [Replicate()])]
    if world_size == 4:
        layouts += [("2d", [Shard(0), Shard(1)]), ("2d", [Replicate(), Shard(0)])]
        if _StridedShard is not None:  # a shard that is not one rectangular piece in general
            layouts.append(("2d", [_StridedShard(0, split_factor=2), Shard(0)]))
    failures = []
    for name, fill in FILLS.items():
        for mesh_name, placements in layouts:
            for shape in [(37, 53), (8, 6)]:
                torch.manual_seed(0)
                expected = fill(torch.empty(shape))
                torch.manual_seed(0)
                dtensor = distribute(torch.zeros(shape), meshes[mesh_name], placements)
                assert fill(dtensor) is dtensor
                if not torch.equal(dtensor.full_tensor(), expected):
                    failures.append(f"{name} {shape} {mesh_name} {placements}")
    # All the fills one after another, as a model's init runs them: each finds the generator
    # where the fills before it left it, so a fill that draws on a DTensor what it does not draw
    # on a plain tensor (constant_ did) shifts every later value.
    # (2, 5): on 4 ranks some shards are empty, and their ranks must draw all the same.
    for (mesh_name, placements), shape in itertools.product(layouts, [(37, 53), (2, 5)]):
        expected, after_plain = fill_in_turn(lambda t: t, shape)
        layout_mesh = meshes[mesh_name]
        got, after = fill_in_turn(lambda t, m=layout_mesh, p=placements: distribute(t, m, p), shape)
        label = f"in turn {shape} {mesh_name} {placements}"
        bad = [n for n in FILLS if not torch.equal(got[n].full_tensor(), expected[n])]
        failures += [f"{label}: {n}" for n in bad]
        if not torch.equal(after, after_plain):
            failures.append(f"{label}: the generator ends elsewhere")
    # On a meta DTensor (a model sharded before to_empty()), as on a plain meta tensor: nothing
    # drawn, nothing written.
    for name, fill in FILLS.items():
        meta = distribute_tensor(torch.empty(37, 53, device="meta"), meshes["1d"], [Shard(0)])
        torch.manual_seed(0)
        before = torch.get_rng_state()
        try:
            fill(meta)
        except Exception as e:  # reported with the other failures
            failures.append(f"{name} on a meta DTensor: {type(e).__name__}: {e}")
        if not torch.equal(torch.get_rng_state(), before):
            failures.append(f"{name} on a meta DTensor draws from the generator")
    torch.manual_seed(0)
    expected = ti.dirac_(torch.empty(8, 6, 3, 3))
    dtensor = distribute_tensor(torch.zeros(8, 6, 3, 3), meshes["1d"], [Shard(0)])
    if not torch.equal(ti.dirac_(dtensor).full_tensor(), expected):
        failures.append("dirac_")

    mesh = meshes["1d"]

    def fsdp(model):
        for layer in model:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)

    def tensor_parallel(model):
        parallelize_module(
            model,
            mesh,
            {
                "3": ColwiseParallel(),
                "1.linear1": ColwiseParallel(),
                "1.linear2": RowwiseParallel(),
            },
        )

    reference = materialized(seed=7)
    for label, shard in [("fsdp2", fsdp), ("tensor parallel", tensor_parallel)]:
        torch.manual_seed(rank)  # seeded values don't depend on the global RNG
        bad = mismatches(materialized(seed=7, shard=shard), reference)
        failures += [f"{label} seed=7: {n}" for n in bad]

    def fsdp_tied(model):
        # The tied embedding and output layer belong to the root's group, as FSDP2 requires of
        # a parameter that two modules share.
        for layer in model[1:3]:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)

    reference = materialized(seed=7, build=build_tied_model)
    tied = materialized(seed=7, shard=fsdp_tied, build=build_tied_model)
    failures += [f"fsdp2 tied: {n}" for n in mismatches(tied, reference)]
    if tied[3].weight is not tied[0].weight:
        failures.append("fsdp2 tied: the tie is lost")
    # Without a seed, ranks whose generators agree agree with one process.
    torch.manual_seed(3)
    reference = materialized()
    torch.manual_seed(3)
    failures += [f"fsdp2 unseeded: {n}" for n in mismatches(materialized(shard=fsdp), reference)]
    reference = reset_in_place()
    for label, shard in [("fsdp2", fsdp), ("tensor parallel", tensor_parallel)]:
        bad = mismatches(reset_in_place(shard), reference)
        failures += [f"{label} reset in place: {n}" for n in bad]
    # Recorded models (deferred_init): the same, each rank replaying only its shards.
    recorded = {"build": build_recorded_model, "deferred": True}
    reference = materialized(seed=7, **recorded)
    for label, shard in [("fsdp2", fsdp), ("tensor parallel", tensor_parallel)]:
        torch.manual_seed(rank)
        model = materialized(seed=7, shard=shard, **recorded)
        failures += [f"deferred {label} seed=7: {n}" for n in mismatches(model, reference)]
        # Called again, materialize() re-initializes the shards in place.
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.zero_()
        ti.materialize(model, seed=7)
        failures += [f"deferred {label} again: {n}" for n in mismatches(model, reference)]
    torch.manual_seed(3)
    reference = materialized(**recorded)
    torch.manual_seed(3)
    bad = mismatches(materialized(shard=fsdp, **recorded), reference)
    failures += [f"deferred fsdp2 unseeded: {n}" for n in bad]
    if world_size == 4:
        failures += fsdp_over_tensor_parallel(meshes["2d"], recorded)
    dist.destroy_process_group()
    for failure in failures:
        print(f"rank {rank}: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    code = main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
    sys.stdout.flush()
    # Without interpreter shutdown: a gloo worker thread may still be releasing the tensors of a
    # finished all-gather, and a thread that takes the GIL during shutdown aborts the process
    # (std::terminate in ~AsyncAllgatherCoalescedWork; seen about once in 13 runs on 4 ranks).
    os._exit(code)
