"""`make gpu-cost`: a static cost report of the CUDA kernels, made without a GPU.

Compiles csrc/cuda/*.cu to a cubin per file for one architecture (sm_90 unless --arch says
otherwise) with setup.py's own nvcc command (nvcc_check_command: the CUDA build's flags and
torch's headers), plus -Xptxas -v, and prints for every kernel and template instantiation, its
(law, dtype) taken from the demangled name:

- registers and stack bytes (cuobjdump -res-usage), spill stores/loads (ptxas -v);
- FP64 instructions: D* arithmetic and compares, and conversions or MUFU ops on F64 values;
- whether it has a 128-bit global store (STG.E.128), and its total SASS instructions;
- SASS instructions per element of the steady-state loop, estimated as below.

Each figure stands beside the issue's target ([n]; OVER when past it): at most 64 registers, no
stack and no FP64 instruction in the fills (FP64 is exempt in float64 kernels, whose arithmetic
it is), and instructions per element for float32 of the uniform and normal laws and of
trunc_normal_'s accepting path (1.2x normal's). The targets were set for sm_90 float32 and are
reported, not enforced. What is enforced is a ratchet: benchmarks/gpu_cost_budget.json holds
each kernel's measured figures (the baseline), and the exit status is 1 when a kernel has more
registers, stack, FP64 instructions or instructions per element than recorded, or lost its
128-bit stores, or is not recorded at all. --update-baseline rewrites the baseline for the
architectures compiled (when kernels improve, or a change is accepted). The counts are
deterministic for a given nvcc and torch headers, which the baseline records: with other
versions, differences are reported but not enforced.

Instructions per element. The SASS (nvdisasm's, the disassembler under cuobjdump -sass, which
also names branch targets) is cut into basic blocks. For every block with one of the kernel's
widest stores to memory (STG, or ST through a generic pointer: in a fill, the vector store of an
aligned contiguous span), the cheapest cycle through it is found: Dijkstra over the control flow
graph, a block weighing its instruction count plus, for a CALL, the callee's cheapest path to
RET. That cycle is the cheapest loop iteration that stores there, every branch on its cheap
side: no redraw, no rejection, no tail, no strided offsets, no slow path of a division or square
root. Its elements are the bytes its stores write over the element size (the dtype in the
template arguments; without one, the width of the kernel's stores when they all have one).
Instructions per element is the cycle's instructions over its elements, the least over those
blocks. Limits:
- it counts issued instructions, not time: latency, dual issue, the pipes' rates and memory
  stalls are not modelled;
- where the common case is the costlier side of a branch (a quantile's tail, say), the figure is
  a lower bound for it; predicated instructions count as issued whether or not they run;
- a loop inside the iteration counts one trip: the figure is then marked * and is a lower bound
  (TruncNormalRejection's per-element sampling loop over a span's 4 elements);
- kernels whose stores have mixed widths and no dtype in their name get no figure.
The total SASS count leaves out the NOP padding.
"""

import argparse
import functools
import heapq
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUDGET = ROOT / "benchmarks" / "gpu_cost_budget.json"
ARCHS = ("sm_80", "sm_89", "sm_90")

# Element type of a kernel's first template argument: name and bytes.
DTYPES = {
    "float": ("float32", 4),
    "double": ("float64", 8),
    "Half": ("float16", 2),
    "BFloat16": ("bfloat16", 2),
    "complex<float>": ("complex64", 8),
    "complex<double>": ("complex128", 16),
    "bool": ("bool", 1),
    "signed char": ("int8", 1),
    "unsigned char": ("uint8", 1),
    "short": ("int16", 2),
    "int": ("int32", 4),
    "long": ("int64", 8),
}
# The elementwise fill kernels, whose second template argument is their law.
FILL_KERNELS = (
    "fill_one_kernel",
    "fill_one_strided_kernel",
    "fill_transposed_kernel",
    "fill_many_kernel",
)
# fill_one_kernel's law (second template argument, parameters stripped) -> law and target family.
# fill_one_strided_kernel (strided views, misaligned data) and fill_transposed_kernel (transposed
# matrices) have the same laws and no per-element target: the former's loop figure is its
# vector-store path's, which only tensors of 2^31 elements or more take; the latter's cheapest
# cycle skips its tile's values (a thread whose tile row lies past the matrix), so its figure is
# the stores' share alone.
LAWS = {
    "Uniform": ("uniform", "uniform"),
    "Normal": ("normal", "normal"),
    "TruncNormal<float>": ("trunc_normal inverse", "trunc_normal"),
    "TruncNormal<double>": ("trunc_normal inverse64", "trunc_normal"),  # FP64 quantile
    "TruncNormalWide": ("trunc_normal wide", "trunc_normal"),
    "TruncNormalRejection": ("trunc_normal rejection", "trunc_normal"),
    "Constant": ("constant", None),
}
OTHER_KERNELS = {  # kernel -> law; the fills get the register, stack and FP64 targets
    "identity_ones_kernel": ("eye_/dirac_ ones", True),
    "write_kernel": ("sparse_ values", True),
    "choose_kernel": ("sparse_ choice", False),
    "count_kernel": ("sparse_ counts", False),
}
FP64_OPS = {"DADD", "DMUL", "DFMA", "DSETP", "DSET", "DMNMX", "DMMA"}


@dataclass
class Instruction:
    opcode: str
    conditional: bool  # guarded by a predicate: a branch, EXIT or RET that may fall through
    targets: list[str]  # labels it may branch or call to


@dataclass
class Kernel:
    file: str
    mangled: str
    name: str = ""  # demangled, namespaces and parameters dropped: the baseline's key
    kernel: str = ""
    law: str = ""
    dtype: str = "-"
    family: str | None = None  # the instructions/element target's
    is_fill: bool = False
    registers: int = 0
    stack: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    fp64: int = 0
    stg128: bool = False
    instructions: int = 0
    loop: tuple[int, int] | None = None  # (instructions, elements) of the steady-state iteration
    inner_loop: bool = False  # the iteration holds a loop, counted one trip
    code: list[Instruction] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)  # label -> instruction index

    def per_element(self) -> Fraction | None:
        return Fraction(*self.loop) if self.loop else None


def say(message: str) -> None:
    print(f"== gpu-cost: {message}", flush=True)


def setup_py():
    """setup.py as a module, for its nvcc command and source list (its setup() call is skipped)."""
    spec = importlib.util.spec_from_file_location("torchinit_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tool(package: str, name: str) -> str:
    """The binary `name` of a pip package (make gpu-cost installs them)."""
    try:
        files = importlib.metadata.files(package) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == name:
            return str(file.locate())
    raise SystemExit(f"gpu-cost: {name} not found: pip install {package} (make gpu-cost does)")


def run(command: list[str]) -> str:
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"gpu-cost: exit status {done.returncode}: {' '.join(command)}")
    return done.stdout + done.stderr


def compile_all(setup, archs: list[str]) -> dict[tuple[str, str], tuple[Path, str]]:
    """(arch, source) -> (cubin, ptxas -v's report); the files compile in parallel, one a core."""
    jobs = {}
    for arch in archs:
        out = ROOT / "build" / "gpu-cost" / arch
        out.mkdir(parents=True, exist_ok=True)
        for source in setup.cuda_sources:
            cubin = out / (Path(source).stem + ".cubin")
            command = [*setup.nvcc_check_command(arch), "-cubin", "-Xptxas", "-v"]
            jobs[arch, source] = (cubin, [*command, source, "-o", str(cubin)])
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        reports = dict(zip(jobs, pool.map(run, [command for _, command in jobs.values()])))
    return {key: (cubin, reports[key]) for key, (cubin, _) in jobs.items()}


INSTRUCTION = re.compile(r"^\s*/\*[0-9a-f]+\*/\s+(@!?U?P\w+\s+)?([A-Z][\w.]*)([^;]*);(.*)$")
LABEL = re.compile(r"^([.$\w]+):\s*$")
SECTION = re.compile(r"^//-+ (\S+)")


def disassemble(nvdisasm: str, file: str, cubin: Path) -> list[Kernel]:
    kernels, current = [], None
    for line in run([nvdisasm, "-c", str(cubin)]).splitlines():
        if section := SECTION.match(line):
            name = section.group(1)
            current = Kernel(file, name[6:]) if name.startswith(".text.") else None
            if current:
                kernels.append(current)
        elif current is None:
            continue
        elif label := LABEL.match(line):
            current.labels[label.group(1)] = len(current.code)
        elif instruction := INSTRUCTION.match(line):
            predicate, opcode, operands, rest = instruction.groups()
            targets = re.findall(r"`\(([^)]+)\)", operands)
            if listed := re.search(r"BRANCH_TARGETS ([^\"]+)", rest):
                targets = listed.group(1).split(",")
            guarded = bool(predicate and predicate.strip() not in ("@PT", "@UPT"))
            # BRA's own predicate operand (BRA !P1, target) makes it conditional too.
            conditional = guarded or bool(re.match(r"\s*!?U?P\d", operands))
            if opcode != "NOP":
                current.code.append(Instruction(opcode, conditional, targets))
    return kernels


def store_bytes(opcode: str) -> int | None:
    """Bytes written by a store to memory (global, or generic: the data pointers), else None."""
    parts = opcode.split(".")
    if parts[0] not in ("STG", "ST"):
        return None
    for suffix, size in (("U8", 1), ("S8", 1), ("U16", 2), ("S16", 2), ("64", 8), ("128", 16)):
        if suffix in parts[1:]:
            return size
    return 4


def is_fp64(opcode: str) -> bool:
    parts = opcode.split(".")
    return parts[0] in FP64_OPS or any(p in ("F64", "RCP64H", "RSQ64H") for p in parts[1:])


def steady_state_loop(kernel: Kernel, element_bytes: int) -> tuple[int, int, bool] | None:
    """(instructions, elements, whether it holds an inner loop) of the cheapest iteration per
    element (the docstring's method)."""
    code, labels = kernel.code, kernel.labels
    branches = ("BRA", "BRX", "EXIT", "RET", "KILL", "CALL")
    leaders = {0, *labels.values()}
    leaders |= {i + 1 for i, ins in enumerate(code) if ins.opcode.split(".")[0] in branches}
    starts = sorted(s for s in leaders if s < len(code))
    block_of = {start: b for b, start in enumerate(starts)}
    ends = [*starts[1:], len(code)]
    blocks = [code[start:end] for start, end in zip(starts, ends)]

    def successors(b: int) -> list[int]:
        last = blocks[b][-1]
        base = last.opcode.split(".")[0]
        after = [block_of[ends[b]]] if ends[b] in block_of else []
        if base in ("BRA", "BRX") or is_jump(last):
            jumps = [block_of[labels[t]] for t in last.targets if t in labels]
            return jumps + after if last.conditional else jumps
        if base in ("EXIT", "RET", "KILL"):
            return after if last.conditional else []
        return after

    def is_jump(ins: Instruction) -> bool:
        """A CALL to a label in the kernel's own code, not to a function: ptxas's conditional
        jump out of a loop (in sm_80 code), which does not return."""
        targets = ins.targets
        return ins.opcode.startswith("CALL") and bool(targets) and targets[0].startswith(".L")

    graph = [successors(b) for b in range(len(blocks))]
    returns = {b for b, block in enumerate(blocks) if block[-1].opcode.startswith("RET")}
    callee_costs: dict[str, int] = {}

    @functools.cache
    def weight(b: int) -> int:
        calls = [t for ins in blocks[b] if ins.opcode.startswith("CALL") and not is_jump(ins)
                 for t in ins.targets]  # fmt: skip
        return len(blocks[b]) + sum(callee_cost(t) for t in calls)

    def callee_cost(label: str) -> int:
        if label not in callee_costs:
            callee_costs[label] = 0  # a recursive call counts nothing more
            found = cheapest([block_of[labels[label]]], returns)
            callee_costs[label] = found[0] if found else 0
        return callee_costs[label]

    def cheapest(sources: list[int], goals: set[int]) -> tuple[int, list[int]] | None:
        """The least-weight path from one of sources into goals: weight and blocks."""
        queue = [(weight(s), s, -1) for s in sources]
        heapq.heapify(queue)
        before: dict[int, int] = {}
        while queue:
            cost, b, previous = heapq.heappop(queue)
            if b in before:
                continue
            before[b] = previous
            if b in goals:
                path = [b]
                while before[path[-1]] != -1:
                    path.append(before[path[-1]])
                return cost, path
            for s in graph[b]:
                if s not in before:
                    heapq.heappush(queue, (cost + weight(s), s, b))
        return None

    def reaches(start: int, goal: int, avoid: set[int]) -> bool:
        seen, todo = set(avoid), list(graph[start])
        while todo:
            b = todo.pop()
            if b == goal:
                return True
            if b not in seen:
                seen.add(b)
                todo += graph[b]
        return False

    def has_inner_loop(cycle: list[int]) -> bool:
        """Whether a block of the cycle also lies on a cycle inside it: one that avoids the loop's
        header, the cycle block that the kernel's entry reaches through no other."""
        on_cycle, seen, todo = set(cycle), set(), [0]
        while todo:
            b = todo.pop()
            if b in on_cycle:
                return any(reaches(c, c, {b}) for c in cycle if c != b)
            if b not in seen:
                seen.add(b)
                todo += graph[b]
        return False

    # The widest store is the vector store of the aligned contiguous spans, where there is one.
    widest = max(store_bytes(ins.opcode) or 0 for ins in code)
    best = None
    for b, block in enumerate(blocks):
        if not any(store_bytes(ins.opcode) == widest for ins in block):
            continue
        found = cheapest(graph[b], {b})
        if found is None:
            continue
        instructions, cycle = found
        written = sum(store_bytes(ins.opcode) or 0 for c in cycle for ins in blocks[c])
        elements = max(1, written // element_bytes)
        if best is None or Fraction(instructions, elements) < Fraction(*best[:2]):
            best = (instructions, elements, cycle)
    return best and (best[0], best[1], has_inner_loop(best[2]))


def describe(kernel: Kernel, demangled: str) -> None:
    """Name, kernel, law, dtype and targets from the demangled signature."""
    name = re.sub(r"^void ", "", demangled)
    for namespace in ("torchinit::cuda::(anonymous namespace)::", "torchinit::", "c10::"):
        name = name.replace(namespace, "")
    name = re.sub(r"\(.*\)$", "", name).replace("> >", ">>")
    kernel.name, kernel.kernel = name, name.split("<")[0]
    arguments = re.match(r"[^<]*<(.*)>$", name)
    first, _, law = (arguments.group(1) if arguments else "").partition(", ")
    if first in DTYPES:
        kernel.dtype = DTYPES[first][0]
    if kernel.kernel in FILL_KERNELS:
        law_key = re.sub(r"<[^,>]*, ?", "<", law) if law.startswith("TruncNormal<") else law
        kernel.law, family = LAWS.get(law_key, LAWS.get(law_key.split("<")[0], (law, None)))
        main = kernel.kernel == "fill_one_kernel" and kernel.dtype == "float32"
        kernel.family = family if main else None
        kernel.is_fill = True
    else:
        kernel.law, kernel.is_fill = OTHER_KERNELS.get(kernel.kernel, ("", False))


def measure(kernels: list[Kernel], ptxas: str, usage: str, demangled: dict[str, str]) -> None:
    spills = {
        name: (int(stores), int(loads))
        for name, stores, loads in re.findall(
            r"Function properties for (\S+)\n\s*\d+ bytes stack frame, (\d+) bytes spill stores, "
            r"(\d+) bytes spill loads",
            ptxas,
        )
    }
    resources = {
        name: (int(reg), int(stack))
        for name, reg, stack in re.findall(r"Function (\S+):\n\s*REG:(\d+) STACK:(\d+)", usage)
    }
    for k in kernels:
        describe(k, demangled[k.mangled])
        k.registers, k.stack = resources[k.mangled]
        k.spill_stores, k.spill_loads = spills.get(k.mangled, (0, 0))
        k.fp64 = sum(is_fp64(ins.opcode) for ins in k.code)
        k.stg128 = any(ins.opcode.startswith("STG.E.128") for ins in k.code)
        k.instructions = len(k.code)
        widths = {store_bytes(ins.opcode) for ins in k.code} - {None}
        element = next((size for dtype, size in DTYPES.values() if dtype == k.dtype), None)
        if element is None and len(widths) == 1:
            element = widths.pop()
        found = steady_state_loop(k, element) if element else None
        if found:
            k.loop, k.inner_loop = found[:2], found[2]
        k.code, k.labels = [], {}  # only the figures are kept


def demangle(names: list[str]) -> dict[str, str]:
    filt = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True)
    if filt.returncode != 0:
        raise SystemExit("gpu-cost: c++filt (binutils) failed: " + filt.stderr)
    return dict(zip(names, filt.stdout.splitlines()))


def analyse(setup, archs: list[str]) -> dict[str, list[Kernel]]:
    cuobjdump = tool("nvidia-cuda-cuobjdump", "cuobjdump")
    nvdisasm = tool("nvidia-cuda-nvdisasm", "nvdisasm")
    say(f"compiling {', '.join(setup.cuda_sources)} for {', '.join(archs)}")
    built = compile_all(setup, archs)
    result: dict[str, list[Kernel]] = {arch: [] for arch in archs}
    for (arch, source), (cubin, ptxas) in built.items():
        kernels = disassemble(nvdisasm, Path(source).name, cubin)
        demangled = demangle([k.mangled for k in kernels])
        measure(kernels, ptxas, run([cuobjdump, "-res-usage", str(cubin)]), demangled)
        result[arch] += kernels
    for kernels in result.values():
        kernels.sort(key=lambda k: (k.file, k.kernel, k.law, k.dtype))
    return result


def figures(k: Kernel) -> dict:
    """A kernel's baseline entry."""
    return {
        "registers": k.registers,
        "stack": k.stack,
        "spill_stores": k.spill_stores,
        "spill_loads": k.spill_loads,
        "fp64": k.fp64,
        "stg128": k.stg128,
        "instructions": k.instructions,
        "loop": list(k.loop) if k.loop else None,
    }


def against_baseline(k: Kernel, base: dict | None) -> tuple[list[str], list[str]]:
    """What got worse and what got better than the recorded figures."""
    if base is None:
        return ["not in the baseline"], []
    worse, better = [], []
    for key, label in (("registers", "regs"), ("stack", "stack"), ("fp64", "fp64")):
        now, then = figures(k)[key], base[key]
        if now != then:
            (worse if now > then else better).append(f"{label} {then}->{now}")
    if base["stg128"] and not k.stg128:
        worse.append("lost STG.E.128")
    elif k.stg128 and not base["stg128"]:
        better.append("gained STG.E.128")
    now, then = k.per_element(), Fraction(*base["loop"]) if base["loop"] else None
    if then is not None and (now is None or now > then):
        worse.append(f"instr/elem {float(then):.2f}->" + (f"{float(now):.2f}" if now else "none"))
    elif now is not None and (then is None or now < then):
        better.append(f"instr/elem {float(then):.2f}->{float(now):.2f}" if then else "new loop")
    return worse, better


def cell(value, target=None, over: bool | None = None) -> str:
    """A figure beside its target, `value [target]`, and OVER when past it (value > target unless
    `over` says)."""
    if target is None:
        return str(value)
    past = value > target if over is None else over
    return f"{value} [{target}]" + " OVER" * past


def targets_of(k: Kernel, targets: dict) -> dict:
    """The issue's targets that apply to k (docstring)."""
    applied = {}
    if k.is_fill:
        applied = {"registers": targets["registers"], "stack": targets["stack"]}
        if k.dtype != "float64":
            applied["fp64"] = targets["fp64"]
    per_element = dict(targets["instructions_per_element"])
    per_element["trunc_normal"] = per_element["normal"] * targets["trunc_normal_over_normal"]
    if k.family:
        applied["per_element"] = per_element[k.family]
    return applied


def report(arch: str, kernels: list[Kernel], budget: dict, toolchain: dict) -> bool:
    """Prints the table; True when the ratchet fails (a kernel worse than its baseline)."""
    baseline = budget["baselines"].get(arch)
    enforced = baseline is not None and all(baseline[t] == v for t, v in toolchain.items())
    versions = ", ".join(f"{tool} {version}" for tool, version in toolchain.items())
    say(f"{arch}, {versions}; [n]: the issue's target (OVER: past it); last column: against "
        f"the baseline in {BUDGET.relative_to(ROOT)}")  # fmt: skip
    header = ("file", "kernel", "law", "dtype", "regs", "stack", "spill st/ld", "fp64",
              "STG.128", "SASS", "loop/elems", "instr/elem", "baseline")  # fmt: skip
    rows, failed, improved = [header], False, False
    for k in kernels:
        target = targets_of(k, budget["targets"])
        per_element, goal = k.per_element(), target.get("per_element")
        per_element_cell = "-"
        if per_element is not None:
            shown = f"{float(per_element):.1f}" + "*" * k.inner_loop
            goal_text = None if goal is None else f"{goal:g}"
            per_element_cell = cell(shown, goal_text, goal is not None and per_element > goal)
        worse, better = (
            against_baseline(k, baseline["kernels"].get(f"{k.file} {k.name}"))
            if baseline
            else ([], [])
        )
        failed |= bool(worse)
        improved |= bool(better)
        status = "WORSE " + ", ".join(worse) if worse else "better " + ", ".join(better)
        rows.append(
            (
                k.file,
                k.kernel,
                k.law,
                k.dtype,
                cell(k.registers, target.get("registers")),
                cell(k.stack, target.get("stack")),
                f"{k.spill_stores}/{k.spill_loads}",
                cell(k.fp64, target.get("fp64")),
                "yes" if k.stg128 else "no",
                str(k.instructions),
                f"{k.loop[0]}/{k.loop[1]}" if k.loop else "-",
                per_element_cell,
                status if worse or better else ("=" if baseline else "-"),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(text.ljust(width) for text, width in zip(row, widths)).rstrip())
    if any(k.inner_loop for k in kernels):
        say("*: the iteration holds an inner loop, counted as one trip (a lower bound)")
    over = sum(text.endswith("OVER") for row in rows[1:] for text in row)
    say(f"{arch}: {len(kernels)} kernels, {over} figures over the issue's targets (not enforced)")
    if baseline:
        names = {f"{k.file} {k.name}" for k in kernels}
        for gone in sorted(set(baseline["kernels"]) - names):
            say(f"{arch}: in the baseline, no longer built: {gone}")
    if not baseline:
        say(f"{arch}: no baseline recorded: nothing enforced")
    elif improved and not failed:
        say(f"{arch}: kernels improved: `make gpu-cost ARGS=--update-baseline` records it")
    elif not enforced:
        recorded = ", ".join(f"{tool} {baseline[tool]}" for tool in toolchain)
        say(
            f"{arch}: the baseline was recorded with {recorded}: differences reported, not enforced"
        )
        return False
    return failed


def dump(budget: dict) -> str:
    """The budget file, one line per kernel, so that a baseline's diff names the kernels."""
    lines = [
        "{",
        ' "targets": ' + json.dumps(budget["targets"], indent=1).replace("\n", "\n ") + ",",
    ]
    lines.append(' "baselines": {')
    archs = sorted(budget["baselines"])
    for i, arch in enumerate(archs):
        base = budget["baselines"][arch]
        lines.append(f"  {json.dumps(arch)}: {{")
        lines += [f"   {json.dumps(key)}: {json.dumps(base[key])}," for key in ("nvcc", "torch")]
        lines.append('   "kernels": {')
        entries = sorted(base["kernels"].items())
        for j, (name, entry) in enumerate(entries):
            lines.append(
                f"    {json.dumps(name)}: {json.dumps(entry)}" + ("," * (j < len(entries) - 1))
            )
        lines += ["   }", "  }" + "," * (i < len(archs) - 1)]
    lines += [" }", "}", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", choices=ARCHS, default=["sm_90"])
    parser.add_argument(
        "--update-baseline",
        action="store_true",
        help=f"record this run's figures as the baseline in {BUDGET.relative_to(ROOT)}",
    )
    args = parser.parse_args()
    if shutil.which("nvcc") is None:
        raise SystemExit("gpu-cost: nvcc not found on PATH")
    setup = setup_py()
    nvcc = re.search(r"V(\d+\.\d+\.\d+)", setup.nvcc_report("--version"))
    toolchain = {"nvcc": nvcc.group(1) if nvcc else "unknown", "torch": setup.torch.__version__}
    budget = json.loads(BUDGET.read_text())
    failed = False
    for arch, kernels in analyse(setup, sorted(set(args.arch))).items():
        failed |= report(arch, kernels, budget, toolchain)
        if args.update_baseline:
            kernels_figures = {f"{k.file} {k.name}": figures(k) for k in kernels}
            budget["baselines"][arch] = {**toolchain, "kernels": kernels_figures}
    if args.update_baseline:
        BUDGET.write_text(dump(budget))
        say(f"baseline written to {BUDGET.relative_to(ROOT)}")
        return 0
    if failed:
        say("a kernel is worse than its baseline (WORSE above); if that is intended, record it "
            "with `make gpu-cost ARGS=--update-baseline`")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
