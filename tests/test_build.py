"""The build: its record of the torch it was built against, the one-line import errors of a
missing, mismatched or broken build, and in a CUDA build a CUDA kernel for every op."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import torchinit_ext
from torchinit_ext import _extension
from torchinit_ext._dispatch import COMPILED_DEVICES

INFO = _extension.build_info()
SANITIZED = "libasan" in os.environ.get("LD_PRELOAD", "")


def test_build_record_names_this_torch_and_its_cuda_kernels():
    assert INFO["torch"] == torch.__version__
    assert INFO["torch_cuda"] == torch.version.cuda
    assert INFO["cuda_kernels"] == ("cuda" in COMPILED_DEVICES)
    if INFO["cuda_kernels"]:
        assert INFO["cuda_arch_list"] and INFO["no_cuda_reason"] is None
    else:
        assert INFO["cuda_arch_list"] is None and INFO["no_cuda_reason"]


@pytest.mark.skipif(
    torch.version.cuda is None or shutil.which("nvcc") is None or SANITIZED,
    reason="needs a CUDA build of torch and nvcc (the sanitizer build is CPU-only)",
)
def test_cuda_torch_with_nvcc_builds_the_cuda_kernels():
    # No environment variable is needed: without a GPU, setup.py picks its default architectures.
    if os.environ.get("TORCHINIT_CUDA") == "0":
        pytest.skip("TORCHINIT_CUDA=0 asks for a CPU-only build")
    assert INFO["cuda_kernels"], INFO["no_cuda_reason"]


def _torchinit_ops() -> list[str]:
    return sorted(
        name for name in torch._C._dispatch_get_all_op_names() if name.startswith("torchinit_ext::")
    )


def _has_kernel(op: str, key: str) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(op, key)


def _device_specific_ops() -> list[str]:
    """The ops with kernels per device; the rest are device-generic (ATen ops inside, or no
    tensor argument) and serve every device through CompositeExplicitAutograd."""
    ops = _torchinit_ops()
    for name in ("uniform_", "normal_", "trunc_normal_", "sparse_", "fill_many_", "orthogonal_"):
        assert f"torchinit_ext::{name}" in ops
    return [op for op in ops if not _has_kernel(op, "CompositeExplicitAutograd")]


def test_every_op_has_a_cpu_kernel_or_serves_every_device():
    ops = _device_specific_ops()
    assert len(ops) >= 8
    assert [op for op in ops if not _has_kernel(op, "CPU")] == []


@pytest.mark.skipif(not INFO.get("cuda_kernels"), reason="built without CUDA kernels")
def test_cuda_build_registers_a_cuda_kernel_for_every_op():
    assert [op for op in _device_specific_ops() if not _has_kernel(op, "CUDA")] == []


def test_installing_the_package_never_replaces_the_installed_torch(tmp_path):
    # What `pip install --no-build-isolation .` would install, as pip resolves it (metadata only,
    # nothing compiled), without this machine's pip constraint file, which caps torch.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    report = tmp_path / "report.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--no-build-isolation",
            "--quiet",
            "--report",
            str(report),
            root,
        ],
        env=dict(os.environ, PIP_CONSTRAINT="/dev/null"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    installs = [item["metadata"]["name"] for item in json.loads(report.read_text())["install"]]
    assert installs == ["torchinit_ext"]


def _import_copy(tmp_path, build_info: str | None, extension: str = "link") -> str:
    """Imports a copy of the package whose extension and build record are as given, in a fresh
    interpreter; returns the last line of its error output (the exception)."""
    package = tmp_path / "torchinit_ext"
    package.mkdir()
    source = os.path.dirname(torchinit_ext.__file__)
    for name in os.listdir(source):
        if name.endswith(".py"):
            shutil.copy(os.path.join(source, name), package)
    built = os.path.basename(_extension._extension_path())
    if extension == "link":
        os.symlink(os.path.join(source, built), package / built)
    elif extension == "garbage":
        (package / built).write_text("not a shared object")
    if build_info is not None:
        (package / "_C.build.json").write_text(build_info)
    env = dict(os.environ, PYTHONPATH=str(tmp_path), PYTHONSAFEPATH="1")
    run = subprocess.run(
        [sys.executable, "-c", "import torchinit_ext"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    return run.stderr.strip().splitlines()[-1]


def _record(torch_version: str) -> str:
    return f'{{"torch": "{torch_version}", "cuda_kernels": false}}'


def test_import_refuses_an_extension_built_for_another_torch(tmp_path):
    line = _import_copy(tmp_path, _record("2.0.0+cpu"))
    assert line.startswith("ImportError: ")
    assert "built against torch 2.0.0+cpu" in line
    assert f"torch {torch.__version__} is installed" in line
    assert "make build" in line and "pip install --no-build-isolation --no-deps" in line


def test_import_without_a_build_names_the_missing_extension_and_the_command(tmp_path):
    line = _import_copy(tmp_path, None, extension="none")
    assert line.startswith("ImportError: torchinit_ext is not built: no compiled extension _C")
    assert str(tmp_path / "torchinit_ext") in line and "make build" in line


def test_import_without_a_build_record_says_so(tmp_path):
    line = _import_copy(tmp_path, None)
    assert line.startswith("ImportError: ") and "has no build record" in line
    assert "make build" in line


def test_import_of_an_extension_that_does_not_load_names_the_fix(tmp_path):
    line = _import_copy(tmp_path, _record(torch.__version__), extension="garbage")
    assert line.startswith("ImportError: ") and "does not load" in line
    assert "make build" in line
