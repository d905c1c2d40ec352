"""patch()/unpatch()/patched() act on the calling context only: other threads and asyncio tasks
get stock's functions bit for bit, even while the trampolines are going in or out, and a
KeyboardInterrupt at any line of them leaves every context running what its state says."""

import asyncio
import contextvars
import gc
import inspect
import sys
import threading

import torch

import torchinit_ext as ti
from torchinit_ext import _patch

TIMEOUT = 60  # seconds: only reached when a thread hangs


def _draws(seed: int) -> torch.Tensor:
    """Tensor.normal_, kaiming_uniform_ and normal_ in turn, from one seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    tensor = torch.empty(64, 32)
    out = [tensor.normal_(generator=generator).clone()]
    out.append(torch.nn.init.kaiming_uniform_(tensor, generator=generator).clone())
    out.append(torch.nn.init.normal_(tensor, 0.0, 2.0, generator=generator).clone())
    return torch.stack(out)


def _ours(seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    tensor = torch.empty(64, 32)
    out = [ti.normal_(tensor, generator=generator).clone()]
    out.append(ti.kaiming_uniform_(tensor, generator=generator).clone())
    out.append(ti.normal_(tensor, 0.0, 2.0, generator=generator).clone())
    return torch.stack(out)


STOCK, OURS = _draws(0), _ours(0)


def _runs_stock() -> bool:
    return torch.equal(_draws(0), STOCK)


def _runs_ours() -> bool:
    return torch.equal(_draws(0), OURS)


def _uninstalled() -> bool:
    """No trampoline or method of ours left in place."""
    return (
        torch.Tensor.normal_ is torch._C.TensorBase.normal_
        and torch.Tensor.uniform_ is torch._C.TensorBase.uniform_
        and "_torchinit_ext_patched" not in vars(torch.nn.init)
        and all(
            f.__code__ is code
            for f, code in zip(
                _patch._torch_interception.functions, _patch._torch_interception.codes
            )
        )
    )


def _join(*threads: threading.Thread) -> None:
    for thread in threads:
        thread.join(TIMEOUT)
        assert not thread.is_alive()


def test_stock_and_ours_differ():
    assert not torch.equal(STOCK, OURS)


def test_a_thread_that_never_patches_gets_stock_while_another_is_patched():
    rounds = 40
    barrier = threading.Barrier(2, timeout=TIMEOUT)
    results: dict[str, list[bool]] = {"patched": [], "plain": []}

    def patched_thread():
        for _ in range(rounds):
            barrier.wait()
            with ti.patched():
                barrier.wait()  # the plain thread draws from here ...
                results["patched"].append(_runs_ours())
                barrier.wait()  # ... to here

    def plain_thread():
        for _ in range(rounds):
            barrier.wait()
            barrier.wait()
            results["plain"].append(_runs_stock())
            barrier.wait()

    threads = [threading.Thread(target=patched_thread), threading.Thread(target=plain_thread)]
    for thread in threads:
        thread.start()
    _join(*threads)
    assert results == {"patched": [True] * rounds, "plain": [True] * rounds}
    assert _uninstalled()


def test_patch_and_unpatch_racing_calls_in_another_thread_never_disturb_them():
    cycles, most_calls = 2000, 30_000
    stock = [_draws(seed) for seed in range(4)]
    done = threading.Event()
    failures: list[BaseException] = []
    calls = 0

    def plain_calls():
        nonlocal calls
        try:
            while not done.is_set() and calls < most_calls:
                assert torch.equal(_draws(calls % 4), stock[calls % 4])
                calls += 1
        except BaseException as e:  # noqa: BLE001 (reported by the test's thread)
            failures.append(e)

    def cycling():
        for _ in range(cycles):
            ti.patch()
            ti.unpatch()
        done.set()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, inside the trampolines
    try:
        threads = [threading.Thread(target=plain_calls), threading.Thread(target=cycling)]
        for thread in threads:
            thread.start()
        _join(*threads)
    finally:
        sys.setswitchinterval(interval)
    assert failures == []
    assert calls > 0
    assert _uninstalled()


def test_a_thread_started_while_patched_starts_unpatched():
    seen = []
    with ti.patched():
        thread = threading.Thread(target=lambda: seen.append(_runs_stock()))
        thread.start()
        _join(thread)
        assert _runs_ours()
    assert seen == [True]


# ---- KeyboardInterrupt at every line -----------------------------------------------------------


def _interrupting(operation, at: int | None) -> int:
    """Runs operation() with a KeyboardInterrupt raised at the `at`-th line that runs in
    _patch.py (None: none); returns the number of lines that ran there. The second event of a
    `with` line, its exit, is no such line: a real signal is handled only once __exit__ has run
    (CPython checks for signals after the call), so a lock held there is always released."""
    lines = 0
    source = inspect.getsource(_patch).splitlines()
    seen: dict[object, set[int]] = {}

    def trace(frame, event, arg):
        nonlocal lines
        if frame.f_code.co_filename != _patch.__file__:
            return None
        if event == "line":
            visited = seen.setdefault(frame, set())
            exiting = frame.f_lineno in visited and source[frame.f_lineno - 1].lstrip().startswith(
                "with "
            )
            visited.add(frame.f_lineno)
            if not exiting:
                lines += 1
                if lines == at:
                    raise KeyboardInterrupt
        return trace

    previous = sys.gettrace()
    sys.settrace(trace)
    try:
        operation()
    finally:
        sys.settrace(previous)
    return lines


def _with_patched():
    with ti.patched():
        assert _runs_ours()


# Each check runs its operation interrupted at line `at` (None: not interrupted) and checks the
# state it leaves; it returns the number of lines the operation ran, or None if interrupted.


def _check_patch(at):
    try:
        lines = _interrupting(ti.patch, at)
    except KeyboardInterrupt:
        assert _runs_stock()  # an interrupted patch() has patched nothing
        return None
    ti.unpatch()
    return lines


def _check_unpatch(at):
    ti.patch()
    try:
        lines = _interrupting(ti.unpatch, at)
    except KeyboardInterrupt:
        if _runs_ours():  # interrupted before it took effect: it can be called again
            ti.unpatch()
        lines = None
    assert _runs_stock()
    return lines


def _check_patched(at):
    try:
        lines = _interrupting(_with_patched, at)
    except KeyboardInterrupt:
        lines = None
    assert _runs_stock()
    return lines


def _check_nested_patched(at):
    with ti.patched():
        try:
            lines = _interrupting(_with_patched, at)
        except KeyboardInterrupt:
            lines = None
        assert _runs_ours()
    assert _runs_stock()
    return lines


def test_a_keyboard_interrupt_at_any_line_leaves_every_context_consistent():
    for check in [_check_patch, _check_unpatch, _check_patched, _check_nested_patched]:
        # Line after line until the operation runs through (how many lines depends on what a
        # cut-short install left in place, so the bound is generous).
        for at in range(1, 500):
            # Each in a context of its own, as a thread or task would be; then this one.
            finished = contextvars.copy_context().run(check, at)
            assert _runs_stock()
            _with_patched()
            assert _runs_stock()
            if finished is not None:
                break
        assert 3 < at < 499
    gc.collect()  # leases whose patch() was cut short, held by tracebacks' cycles
    _with_patched()
    assert _uninstalled()


# ---- asyncio -----------------------------------------------------------------------------------


def test_asyncio_tasks_see_their_own_functions():
    async def main():
        inside, drawn = asyncio.Event(), asyncio.Event()
        seen = {}

        async def patched_task():
            with ti.patched():
                child = asyncio.create_task(child_task())  # a copy of the patched context
                inside.set()
                await drawn.wait()
                seen["patched"] = _runs_ours()
                await asyncio.sleep(0)
                seen["child inside"] = _runs_ours()
            return child

        async def plain_task():
            await inside.wait()
            seen["plain"] = _runs_stock()
            drawn.set()

        async def child_task():
            await drawn.wait()
            seen["child while patched"] = _runs_ours()
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            seen["child after the patch"] = _runs_stock()

        child, _ = await asyncio.gather(patched_task(), plain_task())
        await asyncio.wait_for(child, TIMEOUT)
        return seen

    seen = asyncio.run(main())
    assert seen == {
        "plain": True,
        "patched": True,
        "child inside": True,
        "child while patched": True,
        "child after the patch": True,
    }
    assert _uninstalled()
