"""The files of a run: per device a new <stem>.json (the machine block and the rows) and a
speedup chart <stem>.png, never written over."""

import datetime
import json
import math
import os
import platform

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from benchmarks.gpu_check import driver_version  # noqa: E402
from benchmarks.machine import (  # noqa: E402
    device_name,
    device_slug,
    end_warning,
    l2_cache_bytes,
    simd_level,
)
from benchmarks.timing import hbm_row_bytes, run_counts  # noqa: E402


def machine_info(device, args, bandwidth, cfg, start, end):
    others = end.others_since(start)
    return {
        "device_name": device_name(device),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "python_version": platform.python_version(),
        "date": start.date.isoformat(timespec="seconds"),
        "quick": not args.full,  # the default set
        "simd": simd_level(device),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "contention": args.contention,
        "timing": f"median of {run_counts(cfg)}",
        "fill_bandwidth_GBps": bandwidth / 1e9,
        "driver_version": driver_version() if device == "cuda" else None,
        "cores": os.cpu_count(),
        "load_avg_start": list(start.load),
        "load_avg_end": list(end.load),
        "other_processes_cores": others,
        "quiet": end_warning(start, end) is None,
    } | (cuda_info() if device == "cuda" else {})


def cuda_info():
    """The L2 size and the least a CUDA row writes for a bandwidth fraction (timing.hbm_bytes)."""
    return {"l2_cache_bytes": l2_cache_bytes(), "hbm_row_bytes": hbm_row_bytes("cuda")}


def results_base(device, level, contention, date):
    """<device slug>-<SIMD level>[-contention]-<date and time, UTC>: a name of its own for each
    run, where the device's name alone is shared by every run on it."""
    parts = [device_slug(device), level, "contention" if contention else None]
    return "-".join([*filter(None, parts), f"{date:%Y-%m-%dT%H%M}"])


def new_stem(out_dir, base):
    """`base`, or base-2, base-3, ...: the first with neither a .json nor a .png in out_dir."""
    stem, number = base, 1
    while (out_dir / f"{stem}.json").exists() or (out_dir / f"{stem}.png").exists():
        number += 1
        stem = f"{base}-{number}"
    return stem


def write_results(out_dir, stem, rows, machine):
    """<stem>.json and <stem>.png, created: a file that exists already is never written over (a
    run that raced for the name stops with FileExistsError)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out_dir / f"{stem}.json", out_dir / f"{stem}.png"
    with json_path.open("x") as file:
        results = {"machine": machine, "rows": [r.to_json() for r in rows]}
        file.write(json.dumps(results, indent=2) + "\n")
    failed = sum(1 for r in rows if r.error)
    title = chart_title(machine) + (f"\n{failed} failed rows not shown" if failed else "")
    with png_path.open("xb") as file:
        write_chart(file, title, [r for r in rows if not r.error])
    return json_path, png_path


def chart_title(machine):
    details = [machine["device_name"]]
    if machine["simd"]:
        details += [f"SIMD {machine['simd']}", f"{machine['threads']} threads"]
    details.append(f"torch {machine['torch_version']}")
    if machine["contention"]:
        details.append(f"{machine['contention']} busy processes beside")
    date = datetime.datetime.fromisoformat(machine["date"])
    details.append(f"{date:%Y-%m-%d %H:%M} UTC" + ("" if machine["quiet"] else " (not quiet)"))
    return "torchinit_ext: speedup over stock torch.nn.init\n" + ", ".join(details)


FASTER, SLOWER = "tab:green", "tab:red"
BAR_AREA_IN = 7  # the bars' width in inches, the row names' added to it


def write_chart(file, title, rows):
    """Horizontal log-scale bars from the 1x line to each row's speedup, each labelled with its
    value right of the bar, or right of the 1x line for a bar under 1x (clear of the names)."""
    speedups = [r.speedup for r in rows]
    places = range(len(rows))
    fig, ax = plt.subplots(figsize=(BAR_AREA_IN, 2.5 + 0.28 * len(rows)), layout="constrained")
    colors = [FASTER if s >= 1 else SLOWER for s in speedups]
    ax.barh(places, [s - 1 for s in speedups], left=1, color=colors)
    ax.set_yticks(places, [r.case for r in rows])
    ax.set_ylim(max(len(rows), 1) - 0.5, -0.5)  # the first row on top
    labels = [
        ax.annotate(
            f"{s:.2f}x", (max(s, 1), y), xytext=(4, 0), textcoords="offset points", va="center"
        )
        for y, s in zip(places, speedups)
    ]
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}x"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xlabel("speedup = stock time / ext time (log scale; in a peer row, stock is the peer)")
    fig.suptitle(title)
    fig.legend(
        handles=[
            Patch(color=FASTER, label="torchinit_ext faster than stock"),
            Patch(color=SLOWER, label="torchinit_ext slower than stock"),
        ],
        loc="outside lower center",
        ncols=2,
    )
    # The row names get the room they take on top of the bars'.
    renderer = fig.canvas.get_renderer()
    names = [t.get_window_extent(renderer).width for t in ax.get_yticklabels()]
    fig.set_size_inches(BAR_AREA_IN + max(names, default=0) / fig.dpi, fig.get_size_inches()[1])
    low, high = min([1, *speedups]) / 1.5, max([1, *speedups])
    ax.set_xlim(low, high)
    fig.canvas.draw()
    # The right limit, on the log scale, at which every label ends inside the axes: the label of
    # a bar ending at x takes the fraction `share` of the axes' width after it.
    axes_px = ax.get_window_extent().width
    for label in labels:
        share = (label.get_window_extent().width + 8) / axes_px
        high = max(high, low * math.exp(math.log(label.xy[0] / low) / (1 - share)))
    ax.set_xlim(low, high)
    if high / low < 5:  # too few 1-2-5 ticks on so short a range
        ax.xaxis.set_major_locator(LogLocator(subs=(1, 1.5, *range(2, 10))))
    fig.savefig(file, format="png", dpi=120, bbox_inches="tight", pad_inches=0.2)
    plt.close(fig)
