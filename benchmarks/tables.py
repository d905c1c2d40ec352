"""The bench's results files as Markdown tables (``python -m benchmarks.bench`` writes them;
``benchmarks.report`` puts the tables into the docs).

Kinds (``simd`` takes several files, the others one):

    summary  the README's table: each function's first fill row, the small-tensor rows in one
             line, and each real model under patched() / deferred_init + materialize() (those
             built in under SMALL_MODEL_MS in one line)
    all      every row, with the floor ratios, bandwidth fraction and run count
    models   the real-model rows: stock eager, the floor, both ways, each against both
    simd     one file per SIMD level (the bench's --simd): ext's time and speedup per level
    gpu      the main GPU rows, with the fraction of fill_ bandwidth
"""

import json
import math
import re
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Real-model rows are "<model>: eager vs <way>"; these are the two ways.
PATCHED = ": eager vs patched()"
DEFERRED = ": eager vs deferred_init+materialize()"

# The GPU rows worth a line in docs/cuda.md, in this order; rows a file lacks are left out.
GPU_ROWS = (
    "uniform_ 2^28 f32",
    "normal_ 2^28 f32",
    "trunc_normal_ 2^28 f32",
    "sparse_(0.9) 4096x4096 f32",
    "dirac_ 1024x1024x3x3 f32",
    "orthogonal_ 4096x4096 f32",
    "eye_ 4096x4096 f32",
    "normal_ lstm w.t() 1024x4096 f32",
    "GPT model: meta+reset vs materialize()",
)


def load(path):
    """A results file: ``{"machine": {...}, "rows": [...]}``; path relative to the root."""
    data = json.loads((ROOT / path).read_text())
    data["path"] = str(path)
    return data


# ---- formatting ---------------------------------------------------------------------------


def _digits(value):
    """Three significant digits, trailing zeros kept: 48.0, 4.72, 839."""
    return f"{value:.0f}" if value >= 99.95 else f"{value:#.3g}"


def fmt_ms(ms):
    """A time given in milliseconds, in s, ms or µs."""
    if ms is None:
        return "failed"
    if ms >= 999.5:
        return f"{_digits(ms / 1000)} s"
    if ms >= 0.9995:
        return f"{_digits(ms)} ms"
    return fmt_us(ms * 1000)


def fmt_us(us):
    return f"{_digits(us)} µs"


def fmt_x(ratio):
    if ratio is None:
        return "-"
    if ratio >= 100:
        return f"{ratio:.0f}x"
    if ratio >= 10:
        return f"{ratio:.1f}x"
    return f"{ratio:.2f}x"


def fmt_range(fmt, values):
    """``fmt`` of the smallest and largest value, "a-b", or one value when they print alike."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    low, high = fmt(min(values)), fmt(max(values))
    if low == high:
        return low
    unit = low.rpartition(" ")[2] if " " in low else ""
    if unit and high.endswith(" " + unit):  # "2.04-16.6 µs", not "2.04 µs-16.6 µs"
        return f"{low.rpartition(' ')[0]}-{high}"
    if low.endswith("x") and high.endswith("x"):
        return f"{low[:-1]}-{high}"
    return f"{low}-{high}"


def code_name(case):
    """The case name with its function (the first word) as code: `uniform_` 4096x4096 f32."""
    head, _, rest = case.partition(" ")
    return f"`{head}` {rest}".rstrip() if head.endswith(("_", ")", "]")) else case


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def machine_line(data):
    """One sentence naming where and how the file's numbers were measured, from its own fields;
    the optional ones (date, SIMD level, load, ...) only where the file has them."""
    m = data["machine"]
    parts = [f"**{m.get('device_name', 'unknown device')}**"]
    if m.get("threads"):
        parts.append(f"{m['threads']} threads")
    if m.get("simd"):
        parts.append(f"SIMD {m['simd']}")
    if m.get("torch_version"):
        parts.append(f"torch {m['torch_version']}")
    if m.get("cuda_version"):
        parts.append(f"CUDA {m['cuda_version']}")
    if m.get("driver_version"):
        parts.append(f"driver {m['driver_version']}")
    if m.get("python_version"):
        parts.append(f"Python {m['python_version']}")
    if m.get("date"):
        parts.append(str(m["date"])[:10])
    if m.get("contention"):
        parts.append(f"{m['contention']} busy processes beside it")
    loaded = load_part(m)
    if loaded:
        parts.append(loaded)
    tail = []
    if m.get("timing"):
        tail.append(str(m["timing"]))
    bandwidth = m.get("fill_bandwidth_GBps")
    if bandwidth:
        shown = (
            f"{_digits(bandwidth / 1000)} TB/s"
            if bandwidth >= 1000
            else f"{_digits(bandwidth)} GB/s"
        )
        tail.append(f"`fill_` bandwidth {shown}")
    sentence = ", ".join(parts)
    if tail:
        sentence += "; " + ", ".join(tail)
    return f"{sentence}. From `{data['path']}`."


def load_part(m):
    """How loaded the machine was, from the keys the bench writes since it reports load (older
    files lack them): "machine not quiet (1-minute load 1.51 at start, other processes kept 0.73
    cores busy)", "machine quiet (...)", or None when the file has none of them."""
    details = []
    others = m.get("other_processes_cores")
    start = m.get("load_avg_start")
    if isinstance(start, (list, tuple)) and start:
        start = start[0]  # the 1-minute average
    if isinstance(others, (int, float)):
        # Measured beside the run; the load average at start also counts `make bench`'s build.
        details.append(f"other processes kept {others:.2f} cores busy")
    elif isinstance(start, (int, float)):
        details.append(f"1-minute load {start:.2f} at start")
    quiet = m.get("quiet")
    verdict = None if quiet is None else "machine quiet" if quiet else "machine not quiet"
    if verdict and details:
        return f"{verdict} ({', '.join(details)})"
    return verdict or ", ".join(details) or None


# ---- row groups ---------------------------------------------------------------------------


def group(case):
    if case.endswith((PATCHED, DEFERRED)) and not case.startswith("GPT model"):
        return "model"
    if case.startswith("GPT model"):
        return "gpt"
    if "x1000 calls" in case:
        return "small"
    if "fresh memory" in case:
        return "fresh"
    if case.endswith(" vs ext"):
        return "peer"
    return "fill"


def _shapes(rows):
    """The "(64, 64)" of each "kaiming_uniform_ (64, 64) f32 x1000 calls"."""
    return [re.search(r"\(([\d, ]+)\)", r["case"])[1] for r in rows]


def rows_of(data, kind):
    return [r for r in data["rows"] if group(r["case"]) == kind]


def real_models(data):
    """{model: {"patched": row, "deferred": row}} in the file's order."""
    models = {}
    for row in rows_of(data, "model"):
        for suffix, way in ((PATCHED, "patched"), (DEFERRED, "deferred")):
            if row["case"].endswith(suffix):
                models.setdefault(row["case"][: -len(suffix)], {})[way] = row
    return models


# ---- tables -------------------------------------------------------------------------------


def render_summary(files):
    (data,) = files
    body, seen = [], set()
    for row in rows_of(data, "fill"):
        function = re.match(r"[a-z_]+", row["case"])[0]
        if function in seen:  # one row a function: the first, its main shape
            continue
        seen.add(function)
        body.append(
            [
                code_name(row["case"]),
                fmt_ms(row["stock_ms"]),
                fmt_ms(row["ext_ms"]),
                fmt_x(row["speedup"]),
            ]
        )
    small = rows_of(data, "small")
    if small:
        # 1000 calls a timed run: the milliseconds of a run are the microseconds of a call.
        sizes = [math.prod(map(int, re.findall(r"\d+", shape))) for shape in _shapes(small)]
        body.append(
            [
                f"{len(small)} small-tensor rows ({min(sizes)} to {max(sizes)} elements), a call",
                fmt_range(fmt_us, [r["stock_ms"] for r in small]),
                fmt_range(fmt_us, [r["ext_ms"] for r in small]),
                fmt_range(fmt_x, [r["speedup"] for r in small]),
            ]
        )
    small_models = []
    for model, ways in real_models(data).items():
        got = [ways[w] for w in ("patched", "deferred") if w in ways]
        if max(r["stock_ms"] for r in got) < SMALL_MODEL_MS:
            small_models.append(ways)
            continue
        body.append(
            [
                model,
                fmt_range(fmt_ms, [r["stock_ms"] for r in got]),
                " / ".join(fmt_ms(r["ext_ms"]) for r in got),
                " / ".join(fmt_x(r["speedup"]) for r in got),
            ]
        )
    if small_models:
        # In one line, as the small-tensor rows: docs/models.md has each.
        ways = [[w[way] for w in small_models if way in w] for way in ("patched", "deferred")]
        body.append(
            [
                f"{len(small_models)} models built in under {SMALL_MODEL_MS} ms (tiny configs, "
                "small CNNs)",
                fmt_range(fmt_ms, [r["stock_ms"] for rows in ways for r in rows]),
                " / ".join(fmt_range(fmt_ms, [r["ext_ms"] for r in rows]) for rows in ways if rows),
                " / ".join(fmt_range(fmt_x, [r["speedup"] for r in rows]) for rows in ways if rows),
            ]
        )
    return [machine_line(data), ""] + table(("case", "stock", "torchinit_ext", "speedup"), body)


SMALL_MODEL_MS = 100  # the summary's models whose stock build takes less share a line


def render_all(files):
    (data,) = files
    body = [
        [
            code_name(r["case"]),
            fmt_ms(r["stock_ms"]),
            fmt_ms(r["ext_ms"]),
            fmt_x(r["speedup"]),
            fmt_x(r.get("stock_x_floor")),
            fmt_x(r.get("ext_x_floor")),
            "-" if r.get("bandwidth_fraction") is None else f"{r['bandwidth_fraction']:.2f}",
            str(r.get("runs") or "-"),
        ]
        for r in data["rows"]
    ]
    header = ("case", "stock", "ext", "speedup", "stock/floor", "ext/floor", "bw frac", "runs")
    return [machine_line(data), ""] + table(header, body)


def render_models(files):
    (data,) = files

    def cell(row):
        if row is None:
            return "-"
        return f"{fmt_ms(row['ext_ms'])}: {fmt_x(row['speedup'])} ({fmt_x(row.get('ext_x_floor'))})"

    body = []
    for model, ways in real_models(data).items():
        got = list(ways.values())
        body.append(
            [
                model,
                fmt_range(fmt_ms, [r["stock_ms"] for r in got]),
                fmt_range(fmt_ms, [r.get("floor_ms") for r in got]),
                cell(ways.get("patched")),
                cell(ways.get("deferred")),
            ]
        )
    header = ("model", "stock eager", "floor", "`patched()`", "`deferred_init` + `materialize()`")
    note = "Each way: its time, its speedup over stock (its time over the floor)."
    return [machine_line(data), ""] + table(header, body) + ["", note]


def render_simd(files):
    by_level = {d["machine"].get("simd") or "?": d for d in files}
    rows = {level: {r["case"]: r for r in d["rows"]} for level, d in by_level.items()}
    cases = list(dict.fromkeys(case for got in rows.values() for case in got))
    body = []
    for case in cases:
        got = [rows[level].get(case) for level in rows]
        stock = [r["stock_ms"] for r in got if r and r["stock_ms"] is not None]
        line = [code_name(case), fmt_ms(statistics.median(stock)) if stock else "-"]
        for r in got:
            line.append("-" if r is None else f"{fmt_ms(r['ext_ms'])} ({fmt_x(r['speedup'])})")
        body.append(line)
    header = ["case", "stock (median)"] + [f"ext at {level} (speedup)" for level in rows]
    lines = [f"- {machine_line(d)}" for d in files] + [""]
    return lines + table(header, body)


def render_gpu(files):
    (data,) = files
    by_case = {r["case"]: r for r in data["rows"]}
    body = []
    for case in GPU_ROWS:
        r = by_case.get(case)
        if r is None:
            continue
        frac = r.get("bandwidth_fraction")
        show_frac = frac is not None and frac >= 0.01 and group(case) == "fill"
        body.append(
            [
                code_name(case),
                fmt_ms(r["stock_ms"]),
                f"{fmt_ms(r['ext_ms'])} ({fmt_x(r['speedup'])})",
                f"{frac:.2f}" if show_frac else "",
            ]
        )
    header = ("case", "stock", "ext (speedup)", "fraction of `fill_` bandwidth")
    return [machine_line(data), ""] + table(header, body)


KINDS = {
    "summary": render_summary,
    "all": render_all,
    "models": render_models,
    "simd": render_simd,
    "gpu": render_gpu,
}


def render(kind, paths):
    if kind not in KINDS:
        raise ValueError(f"unknown table kind {kind!r}; known: {', '.join(KINDS)}")
    if kind != "simd" and len(paths) != 1:
        raise ValueError(f"a {kind} table comes from one results file, not {len(paths)}")
    return "\n".join(KINDS[kind]([load(p) for p in paths])) + "\n"
