"""Measured numbers in the docs come from results files: every table between perf-table markers
must be exactly what benchmarks/tables.py renders from the file its marker names. Also: the
renderer copes with results files that lack the optional keys, and the docs' sharded example
runs."""

import json

import pytest
import torch.distributed as dist

from benchmarks import report, tables
from tests.helpers.doc_snippets import ROOT, code_blocks, run_python


@pytest.mark.parametrize("doc", report.DOCS)
def test_perf_tables_match_their_results_files(doc):
    text = (ROOT / doc).read_text()
    found = report.blocks(text)
    assert found, f"{doc} has no perf-table markers"
    for kind, paths, body, _ in found:
        assert body == tables.render(kind, paths), (
            f"{doc}: the {kind} table from {' '.join(paths)} is stale or edited by hand; "
            f"run: python -m benchmarks.report --update {doc}"
        )


def test_readme_has_one_table_from_one_named_machine():
    found = report.blocks((ROOT / "README.md").read_text())
    assert [(kind, len(paths)) for kind, paths, _, _ in found] == [("summary", 1)]
    (_, (path,), body, _) = found[0]
    machine = json.loads((ROOT / path).read_text())["machine"]
    assert machine["device_name"] in body and machine["torch_version"] in body


def test_marked_results_files_exist():
    for doc in report.DOCS:
        for _, paths, _, _ in report.blocks((ROOT / doc).read_text()):
            for path in paths:
                assert (ROOT / path).is_file(), f"{doc} names {path}, which does not exist"


def _results(tmp_path, machine, rows):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"machine": machine, "rows": rows}))
    return path


def _row(case, stock_ms, ext_ms):
    speedup = None if stock_ms is None or ext_ms is None else stock_ms / ext_ms
    return {
        "case": case,
        "device": "cpu",
        "stock_ms": stock_ms,
        "ext_ms": ext_ms,
        "speedup": speedup,
    }


def test_report_renders_files_without_optional_keys(tmp_path):
    # Only what every results file has; a failed row has null numbers.
    path = _results(
        tmp_path,
        {"device_name": "Some CPU", "torch_version": "2.99.0"},
        [
            _row("uniform_ 4096x4096 f32", 60.0, 5.0),
            _row("normal_ 4096x4096 f32", None, None),
            _row("zeros_ (1,) f32 x1000 calls", 2.0, 1.0),
            _row("HF Tiny 1M: eager vs patched()", 1500.0, 300.0),
            _row("HF Tiny 1M: eager vs deferred_init+materialize()", 1400.0, 200.0),
        ],
    )
    for kind in tables.KINDS:
        text = tables.render(kind, [str(path)])
        assert "**Some CPU**" in text and "torch 2.99.0" in text
    summary = tables.render("summary", [str(path)])
    assert "| `uniform_` 4096x4096 f32 | 60.0 ms | 5.00 ms | 12.0x |" in summary
    assert "| `normal_` 4096x4096 f32 | failed | failed | - |" in summary
    assert "| HF Tiny 1M | 1.40-1.50 s | 300 ms / 200 ms | 5.00x / 7.00x |" in summary


def test_the_summary_gives_models_built_in_under_100_ms_one_line(tmp_path):
    path = _results(
        tmp_path,
        {"device_name": "Some CPU", "torch_version": "2.99.0"},
        [
            _row("Small A: eager vs patched()", 20.0, 10.0),
            _row("Small A: eager vs deferred_init+materialize()", 20.0, 25.0),
            _row("Small B: eager vs patched()", 50.0, 25.0),
            _row("Small B: eager vs deferred_init+materialize()", 60.0, 40.0),
            _row("Large: eager vs patched()", 1500.0, 300.0),
            _row("Large: eager vs deferred_init+materialize()", 1400.0, 200.0),
        ],
    )
    summary = tables.render("summary", [str(path)])
    assert "| Large | 1.40-1.50 s | 300 ms / 200 ms | 5.00x / 7.00x |" in summary
    assert (
        "| 2 models built in under 100 ms (tiny configs, small CNNs) | 20.0-60.0 ms "
        "| 10.0-25.0 ms / 25.0-40.0 ms | 2.00x / 0.80-1.50x |"
    ) in summary
    assert "Small A" not in summary


def test_report_names_the_optional_machine_fields(tmp_path):
    machine = {
        "device_name": "Some CPU",
        "torch_version": "2.99.0",
        "simd": "avx2",
        "date": "2027-01-02T03:04:05+00:00",
        "contention": 2,
        "load_avg_start": [1.5, 0.25, 0.125],
        "other_processes_cores": 0.734,
        "quiet": False,
    }
    line = tables.machine_line(
        {"machine": machine, "rows": [], "path": "benchmarks/results/x.json"}
    )
    for part in ("SIMD avx2", "2027-01-02", "2 busy processes", "x.json"):
        assert part in line
    load = "machine not quiet (other processes kept 0.73 cores busy)"
    assert load in line
    quiet = {**machine, "load_avg_start": [0.1, 0.2, 0.3], "other_processes_cores": 0.0}
    line = tables.machine_line({"machine": {**quiet, "quiet": True}, "rows": [], "path": "x"})
    assert "machine quiet (other processes kept 0.00 cores busy)" in line
    # Without /proc/stat the bench has no figure for other processes: the load average shows.
    del quiet["other_processes_cores"]
    line = tables.machine_line({"machine": quiet, "rows": [], "path": "x"})
    assert "machine not quiet (1-minute load 0.10 at start)" in line


def test_report_update_rewrites_a_stale_table(tmp_path):
    path = _results(tmp_path, {"device_name": "Some CPU"}, [_row("uniform_ 64 f32", 2.0, 1.0)])
    doc = tmp_path / "doc.md"
    marker = f"<!-- perf-table summary {path} -->"
    doc.write_text(f"# Doc\n\n{marker}\n| typed | by | hand |\n<!-- /perf-table -->\n\nEnd.\n")
    assert report.main(["--check", str(doc)]) == 1
    assert report.main(["--update", str(doc)]) == 0
    assert report.main(["--check", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith(f"# Doc\n\n{marker}\n**Some CPU**") and text.endswith(
        "| `uniform_` 64 f32 | 2.00 ms | 1.00 ms | 2.00x |\n<!-- /perf-table -->\n\nEnd.\n"
    )


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
def test_models_doc_sharded_example_runs_under_torchrun(tmp_path):
    (line, code), *_ = [(n, c) for n, c in code_blocks("docs/models.md") if "fully_shard" in c]
    args = ("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2")
    done = run_python(code, tmp_path, args=args)
    failure = f"docs/models.md:{line}: the example fails:\n{done.stderr[-3000:]}"
    for rank in (0, 1):
        assert f"rank {rank}: every shard equals the single-device model" in done.stdout, failure
    # After both ranks have checked everything, torch's gloo sometimes aborts a rank at exit
    # ("terminate called without an active exception"): plain torch does it too, with no
    # torchinit_ext (init_device_mesh, all_reduce, destroy_process_group: 6 exits in 15, torch
    # 2.13 and 2.15). Any other failure fails the test.
    exit_abort = "terminate called without an active exception" in done.stderr
    assert done.returncode == 0 or exit_abort, failure
