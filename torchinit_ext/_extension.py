"""Loads the compiled extension, torchinit_ext._C, or says in one line what is wrong and how to
fix it: no build, a build for another torch, or one that does not load.

The build writes _C.build.json beside the extension (setup.py): the torch it was built against,
and whether it has CUDA kernels. An extension built against another torch may load and then
crash, or fail with an undefined symbol that names nothing of ours, so it is refused first.
"""

import importlib
import importlib.machinery
import json
import os

import torch

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
BUILD_INFO_PATH = os.path.join(PACKAGE_DIR, "_C.build.json")
REBUILD = (
    "rebuild it against the installed torch: `make build` in the source checkout, or "
    "`pip install --no-build-isolation --no-deps --force-reinstall .`"
)


def _extension_path() -> str | None:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(PACKAGE_DIR, "_C" + suffix)
        if os.path.exists(path):
            return path
    return None


def build_info() -> dict:
    """What _C.build.json records: torch, torch_cuda, cuda_kernels, cuda_arch_list,
    no_cuda_reason. Empty for a build that wrote none."""
    try:
        with open(BUILD_INFO_PATH) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def load():
    """Imports and returns torchinit_ext._C, after checking it was built for this torch."""
    path = _extension_path()
    if path is None:
        raise ImportError(
            f"torchinit_ext is not built: no compiled extension _C in {PACKAGE_DIR}; build it: "
            "`make build` in the source checkout, or `pip install --no-build-isolation .`"
        )
    built_for = build_info().get("torch")
    if built_for is None:
        raise ImportError(
            f"{path} has no build record ({BUILD_INFO_PATH} is missing or unreadable), so the "
            f"torch it was built against is unknown; {REBUILD}"
        )
    if built_for != torch.__version__:
        raise ImportError(
            f"{path} was built against torch {built_for}, but torch {torch.__version__} is "
            f"installed; {REBUILD}"
        )
    try:
        return importlib.import_module("torchinit_ext._C")
    except ImportError as error:
        raise ImportError(f"{path} does not load ({error}); {REBUILD}") from error
