"""What the bench prints: the header, a table per device with the legend of its columns, the
host cost, the comparison of SIMD levels, the load at the end and the paths of the results."""

import math
import os
import platform
import statistics
import sys
import textwrap
from pathlib import Path

import torch

from benchmarks.machine import (
    QUIET_OTHERS,
    cpu_model_name,
    device_name,
    end_warning,
    show_load,
    simd_level,
    start_warning,
)
from benchmarks.timing import for_device, run_counts

WIDTH = 100  # console columns: the table, the legend and the other lines fit in them
CASE_WIDTH = 43  # the numbers take the other 57 columns; a longer name goes on over the next lines
COLUMNS = (  # header, width
    ("stock ms", 8),
    ("ext ms", 8),
    ("speedup", 7),
    ("floor ms", 8),
    ("ext/floor", 9),
    ("runs", 4),
)


LEGEND = """\
Columns (each time is the median of the row's timed runs, for one call, in milliseconds):
  stock ms   stock torch.nn.init; in a row "A vs B", A is this column (stock's way to build a
             model, or a peer library such as numpy) and B the ext column
  ext ms     torchinit_ext: the same call with the same arguments, on the same tensor
  speedup    stock ms / ext ms: above 1x, torchinit_ext is faster
  floor ms   the least the work can cost: fill_(1.0) of the same tensors, once (model and
             fresh-memory rows: allocating each tensor and filling it once, from fresh memory)
  ext/floor  ext ms / floor ms: 1x is as fast as merely writing the memory
  runs       timed rounds (stock, ext, floor, interleaved) behind each median
Rows "x1000 calls" time 1000 calls on a small tensor: their milliseconds are microseconds per call.
The JSON has more for each row: stock over the floor (stock_x_floor), the fraction of the fill
bandwidth (bandwidth_fraction), elements written per second and the row's wall time."""


SIMD_LEGEND = """\
Columns of the comparison:
  stock ms   stock torch.nn.init, for one call: the median of its times in the levels' runs
  <level>    torchinit_ext with its CPU kernels at that SIMD level (TORCHINIT_CPU_CAPABILITY):
             milliseconds for one call and, in brackets, its speedup over stock in the same run"""


def say(name, text):
    """One item of the header or the summary: its name, then its text wrapped under itself."""
    print(textwrap.fill(text, WIDTH, initial_indent=f"  {name:<10}  ", subsequent_indent=" " * 14))


def sig(value, digits, max_decimals):
    """`value` with about `digits` significant digits, and at most `max_decimals` decimals."""
    magnitude = math.floor(math.log10(abs(value))) if value else 0
    return f"{value:.{min(max_decimals, max(0, digits - 1 - magnitude))}f}"


def ms(value):
    return sig(value, 4, 4)


def times(ratio):
    return sig(ratio, 3, 2) + "x"


def plural(count, noun):
    return f"{count} {noun}{'' if count == 1 else 's'}"


def wrap_name(name, width):
    return textwrap.wrap(name, width, subsequent_indent="  ", break_on_hyphens=False)


def table_lines(rows):
    """The table of `rows`, one line each: a name longer than its column goes on over the next
    lines, and a failed row's reason stands under its name."""
    header = f"{'case':<{CASE_WIDTH}}" + "".join(f"  {name:>{width}}" for name, width in COLUMNS)
    lines = [header, "-" * len(header)]
    for row in rows:
        names = wrap_name(row.case, CASE_WIDTH)
        if row.error:
            reason = textwrap.wrap(
                f"FAILED: {row.error}", WIDTH, initial_indent="    ", subsequent_indent="    "
            )
            lines += names + reason
            continue
        cells = (ms(row.stock_ms), ms(row.ext_ms), times(row.speedup), ms(row.floor_ms))
        cells += (times(row.ext_x_floor), str(row.runs))
        numbers = "".join(f"  {cell:>{width}}" for cell, (_, width) in zip(cells, COLUMNS))
        lines += [f"{names[0]:<{CASE_WIDTH}}{numbers}", *names[1:]]
    return lines


def print_header(args, cfg, cases, start, busy_now):
    """What runs, where, and how loaded the machine is before the first row."""
    print("torchinit_ext benchmark: stock torch.nn.init against torchinit_ext")
    say(
        "cpu",
        f"{cpu_model_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads; "
        f"our kernels at SIMD {simd_level('cpu')} (torch's own: "
        f"{torch.backends.cpu.get_cpu_capability()})",
    )
    if "cuda" in cases:
        say("cuda", device_name("cuda"))
    cuda = f", CUDA {torch.version.cuda}" if torch.version.cuda else ""
    say("torch", f"{torch.__version__}{cuda}, python {platform.python_version()}")
    chosen = "every case (--full)" if args.full else "the default set (--full: every case)"
    if args.contention:
        chosen = "the 16M-element and real-model patched() rows of " + chosen
    if args.filter:
        chosen += f", names containing {args.filter!r}"
    counts = ", ".join(f"{len(on_device)} on {device}" for device, on_device in cases.items())
    say("rows", f"{chosen}: {counts}")
    clocks = "CPU: perf_counter, CUDA: events"
    if "cuda" in cases:
        gpu = for_device(cfg, "cuda")
        clocks += (
            f" around back-to-back calls of about {gpu.sample_s * 1e3:g} ms, after "
            f"{plural(gpu.warmup, 'warm-up call')}"
        )
    say(
        "timing",
        f"median of {run_counts(cfg)} after {plural(cfg.warmup, 'warm-up call')} each; {clocks}",
    )
    if args.contention:
        say(
            "contention",
            f"{args.contention} busy processes (pure-Python loops, a core each) are started "
            "beside the rows, after the bandwidth probe: this bench's own, not other load",
        )
    given = "; measured by the --simd run" if args.start_load else ""
    say(
        "load",
        f"{show_load(start.load)} (1-, 5- and 15-minute averages) at start, "
        f"on {os.cpu_count()} cores{given}",
    )
    if busy_now is not None:
        say("now", f"other processes keep {busy_now:.2f} cores busy (quiet: under {QUIET_OTHERS})")
    warning = start_warning(start, busy_now)
    if warning:
        say("WARNING", warning)
    sys.stdout.flush()


def print_tables(results):
    """One table per device, printed once, at the end of the run."""
    for device, (rows, bandwidth) in results.items():
        details = [device_name(device)]
        if device == "cpu":
            details.append(f"SIMD {simd_level(device)}")
        details.append(f"fill bandwidth {bandwidth / 1e9:.1f} GB/s")
        print(f"\n== {device}: {', '.join(details)} ==")
        print("\n".join(table_lines(rows)))


def print_host_cost(cost):
    print(
        f"\n== host cost: re-initializing in place, {cost['model']}, {cost['tensors']} tensors =="
    )
    for name, label in (("stock", "stock's reset loop"), ("ext", "materialize()")):
        print(
            f"  {label:<20} {cost[f'{name}_calls_per_tensor']:6.1f} calls/tensor "
            f"({cost[f'{name}_python_calls_per_tensor']:.1f} of Python functions)  "
            f"{cost[f'{name}_us_per_tensor']:6.1f} us/tensor"
        )


def print_summary(start, end, count):
    """The machine's load at the end and beside the run, then `count` (what ran, what failed)."""
    print()
    say("load", f"{show_load(end.load)} at the end (the bench's own threads included)")
    others = end.others_since(start)
    if others is not None:
        busy = f"{others:.2f} cores kept busy on average by other processes during the run"
        say("other load", f"{busy} (quiet: under {QUIET_OTHERS})")
    warning = end_warning(start, end)
    if warning:
        say("WARNING", warning)
    print(f"{count}, {end.wall - start.wall:.0f} s")


def shown(path):
    """`path` relative to the working directory where it lies under it."""
    path = path.resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def print_paths(written):
    """The results and chart paths: the last lines of the output."""
    lines = []
    for label, json_path, png_path in written:
        tag = f" ({label})" if len(written) > 1 else ""
        lines += [(f"results{tag}:", json_path), (f"plot{tag}:", png_path)]
    width = max((len(key) for key, _ in lines), default=0) + 1
    for key, path in lines:
        print(f"{key:<{width}}{shown(path)}")


def print_simd_table(results):
    """Stock's median over the levels' runs, and per level ext's time and its speedup against
    the stock of the same run."""
    by_level = {level: {r["case"]: r for r in got["rows"]} for level, got in results.items()}
    cases = list(dict.fromkeys(case for rows in by_level.values() for case in rows))
    cell = 15  # "802.2 (2.69x)"
    width = min(max(map(len, cases)), WIDTH - 10 - (2 + cell) * len(by_level))
    print("\n== SIMD levels compared: ext ms for one call (speedup over stock in the same run) ==")
    for level, got in results.items():
        ran = got["machine"]["simd"]
        note = "" if ran == level else f" (asked for {level})"
        print(f"  {level}: ran {ran}{note}, contention {got['machine']['contention']}")
    columns = f"{'case':<{width}}  {'stock ms':>8}" + "".join(f"  {lv:>{cell}}" for lv in by_level)
    print(f"{columns}\n{'-' * len(columns)}")
    for case in cases:
        got = [rows.get(case) for rows in by_level.values()]
        stock_ms = [r["stock_ms"] for r in got if r and r["stock_ms"] is not None]
        names = wrap_name(case, width)
        line = f"{names[0]:<{width}}  " + (
            f"{ms(statistics.median(stock_ms)):>8}" if stock_ms else f"{'-':>8}"
        )
        for r in got:
            value = (
                f"{ms(r['ext_ms'])} ({times(r['speedup'])})"
                if r and r["ext_ms"] is not None
                else "-"
            )
            line += f"  {value:>{cell}}"
        print("\n".join([line, *names[1:]]))
