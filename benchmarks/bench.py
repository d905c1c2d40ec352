"""Benchmark stock ``torch.nn.init`` against ``torchinit_ext``, side by side.

The command line (benchmarks/README.md has the method and the output). Its parts: cases.py and
models.py (the rows), timing.py (how each is timed), machine.py (the devices and the load),
console.py (what is printed) and results.py (the JSON and the chart of each device).

Usage
    python -m benchmarks.bench [--full] [--contention [N]] [--simd LEVELS]
                               [--device {cpu,cuda,all}] [--filter SUBSTR] [--out DIR]
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch

import torchinit_ext as ext
from benchmarks.cases import CASES
from benchmarks.console import (
    LEGEND,
    SIMD_LEGEND,
    WIDTH,
    plural,
    print_header,
    print_host_cost,
    print_paths,
    print_simd_table,
    print_summary,
    print_tables,
    wrap_name,
)
from benchmarks.machine import (
    SIMD_LEVELS,
    Moment,
    others_busy_now,
    simd_level,
    supported_simd_levels,
)
from benchmarks.models import host_cost
from benchmarks.results import machine_info, new_stem, results_base, write_results
from benchmarks.timing import (
    DEFAULT,
    FULL,
    Row,
    busy_processes,
    fill_bandwidth,
    for_device,
    hbm_row_bytes,
    make_timer,
    run_case,
)

# The tail rows put the mean far outside [a, b] on purpose; both libraries warn about it.
warnings.filterwarnings("ignore", message="mean is more than 2 std")
# The GPT model's constructor only composes torch.nn layers: their resets are its whole init.
warnings.filterwarnings("ignore", category=ext.UnrecordedInitWarning)

# This command, for the rows run in a subprocess and for each level of --simd.
SELF = [sys.executable, "-m", "benchmarks.bench"]
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--full",
        action="store_true",
        help="every case (the default is a subset on the CPU: 4-5 minutes on 2 cores), "
        "with more runs",
    )
    parser.add_argument(
        "--contention",
        type=int,
        nargs="?",
        const=os.cpu_count(),
        default=0,
        metavar="N",
        help="only the 16M-element and real-model patched() rows, with N busy processes "
        f"running beside them (default N: one per core, {os.cpu_count()})",
    )
    parser.add_argument(
        "--simd",
        metavar="LEVELS",
        help="comma list of avx512, avx2, default, or 'all' (those this CPU has): "
        "run the CPU rows once per level, each in a subprocess, and compare them",
    )
    # Set by a --simd run on its subprocesses: the stem of their results (named by the level asked
    # for) and the load average before the first level ran.
    parser.add_argument("--simd-child", metavar="STEM", help=argparse.SUPPRESS)
    parser.add_argument("--start-load", type=float, nargs=3, help=argparse.SUPPRESS)
    # Set on the subprocess of a case with its own environment: run that case alone, print its
    # row as JSON (the fill bandwidth comes from the parent).
    parser.add_argument("--one-case", help=argparse.SUPPRESS)
    parser.add_argument("--bandwidth", type=float, help=argparse.SUPPRESS)
    parser.add_argument(
        "--device", choices=("cpu", "cuda", "all"), default="all", help="default: all available"
    )
    parser.add_argument(
        "--filter", default="", metavar="SUBSTR", help="only cases whose name contains SUBSTR"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS_DIR,
        metavar="DIR",
        help=f"results directory (default {RESULTS_DIR})",
    )
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    if args.simd:
        levels = supported_simd_levels() if args.simd == "all" else args.simd.split(",")
        unknown = set(levels) - set(SIMD_LEVELS)
        if unknown:
            parser.error(f"--simd: unknown level(s) {', '.join(sorted(unknown))}")
        args.simd = levels
    return args


def select_devices(choice):
    if choice == "all":
        return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [choice]


def run_device(device, cases, cfg, contention):
    """The rows of `cases` on `device`, with one progress line as each ends (the table comes at
    the end of the run), and the device's fill bandwidth."""
    timed = make_timer(device)
    beyond_bytes = hbm_row_bytes(device)
    bandwidth = fill_bandwidth(device, timed, cfg, beyond_bytes)
    print(f"\n{device}, {len(cases)} rows (fill bandwidth {bandwidth / 1e9:.1f} GB/s):", flush=True)
    rows = []
    with busy_processes(contention):
        for index, case in enumerate(cases, 1):
            start = time.perf_counter()
            if case.env:
                rows.append(run_case_in_subprocess(case, device, cfg, bandwidth))
            else:
                rows.append(run_case(case, device, timed, cfg, bandwidth, beyond_bytes))
            done = "FAILED" if rows[-1].error else plural(rows[-1].runs, "run")
            done += f", {time.perf_counter() - start:.1f} s"
            # The name wraps, its run count and time stay whole on its last line.
            name = f"[{index:>{len(str(len(cases)))}}/{len(cases)}] {case.name}:"
            lines = wrap_name(name, WIDTH - len(done) - 1)
            print("\n".join(lines[:-1] + [f"{lines[-1]} {done}"]), flush=True)
    return rows, bandwidth


def run_case_in_subprocess(case, device, cfg, bandwidth):
    """run_case in a subprocess of this script with case.env set."""
    command = [*SELF, "--one-case", case.name, "--device", device]
    command += ["--bandwidth", str(bandwidth)] + (["--full"] if cfg is FULL else [])
    child = subprocess.run(
        command, env={**os.environ, **dict(case.env)}, capture_output=True, text=True
    )
    lines = child.stdout.strip().splitlines()
    if child.returncode != 0 or not lines:
        last = (child.stderr.strip().splitlines() or [""])[-1]  # a traceback's exception
        return Row(case.name, device, error=f"subprocess exit {child.returncode}: {last}")
    return Row(**json.loads(lines[-1]))


def run_one_case(args):
    """--one-case: the row of one case, as JSON on the last line of stdout."""
    case = next(c for c in CASES if c.name == args.one_case)
    cfg = FULL if args.full else DEFAULT
    row = run_case(case, args.device, make_timer(args.device), cfg, args.bandwidth)
    print(json.dumps({**row.to_json(), "error": row.error}))


def run_simd_levels(args, start):
    """--simd: the CPU rows once per level, each in a subprocess of this script with
    TORCHINIT_CPU_CAPABILITY set (the extension reads it when it loads), then one table."""
    results, written, failed = {}, [], False
    for level in args.simd:
        print(f"\n==== TORCHINIT_CPU_CAPABILITY={level} ====", flush=True)
        stem = new_stem(args.out, results_base("cpu", level, args.contention, start.date))
        command = [*SELF, "--simd-child", stem, "--device", "cpu"]
        command += ["--filter", args.filter, "--out", str(args.out)]
        command += ["--start-load", *map(str, start.load)]
        command += ["--full"] if args.full else []
        command += ["--contention", str(args.contention)] if args.contention else []
        code = subprocess.run(command, env={**os.environ, "TORCHINIT_CPU_CAPABILITY": level})
        failed |= code.returncode != 0
        if code.returncode in (0, 1):  # 1: some case failed, the results were written
            path = args.out / f"{stem}.json"
            results[level] = json.loads(path.read_text())
            written.append((level, path, path.with_suffix(".png")))
    if results:
        print_simd_table(results)
        print(f"\n{SIMD_LEGEND}\nThe tables of each level above:\n{LEGEND}")
    done = f"{len(args.simd)} SIMD levels, {len(args.simd) - len(results)} failed"
    print_summary(start, Moment.now(), done)
    print_paths(written)
    return failed


def main():
    args = parse_args()
    # SIGTERM unwinds like Ctrl-C, so the busy processes of --contention are killed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.one_case:
        sys.exit(run_one_case(args))
    start = Moment.now()
    if args.start_load:  # a --simd level: the load before its first level ran
        start = replace(start, load=tuple(args.start_load))
    if args.simd:
        sys.exit(1 if run_simd_levels(args, start) else 0)
    cfg = FULL if args.full else DEFAULT
    cases = [c for c in CASES if args.filter in c.name and (c.contended or not args.contention)]
    if not cases:
        sys.exit(f"no case matches --filter {args.filter!r}")
    by_device = {
        device: [
            c for c in cases if device in c.devices and (c.default or args.full or device != "cpu")
        ]
        for device in select_devices(args.device)
    }
    by_device = {device: on_device for device, on_device in by_device.items() if on_device}
    print_header(args, cfg, by_device, start, others_busy_now())
    # The host's work per tensor: once, on the CPU (as it is on any device), beside the CPU rows.
    cost = host_cost() if "cpu" in by_device and not args.contention else None
    results, written = {}, []
    for device, on_device in by_device.items():
        device_cfg = for_device(cfg, device)
        rows, bandwidth = run_device(device, on_device, device_cfg, args.contention)
        end = Moment.now()
        base = results_base(device, simd_level(device), args.contention, start.date)
        stem = args.simd_child or new_stem(args.out, base)  # a --simd level runs on the CPU alone
        machine = machine_info(device, args, bandwidth, device_cfg, start, end)
        if device == "cpu":
            machine["host_cost"] = cost
        written.append((device, *write_results(args.out, stem, rows, machine)))
        results[device] = rows, bandwidth
    print_tables(results)
    if cost:
        print_host_cost(cost)
    if not args.simd_child:  # a --simd run prints it once, under its comparison
        print(f"\n{LEGEND}")
    all_rows = [row for rows, _ in results.values() for row in rows]
    failed = sum(1 for r in all_rows if r.error)
    print_summary(start, end, f"{len(all_rows)} rows, {failed} failed")
    if not args.simd_child:  # a --simd run prints its levels' at its end
        print_paths(written)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
