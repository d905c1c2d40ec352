"""Builds torchinit_ext and its compiled extension, torchinit_ext._C: CPU kernels, plus the CUDA
kernels of csrc/cuda when torch was built with CUDA and nvcc is found (TORCHINIT_CUDA=0 skips
them, TORCHINIT_CUDA=1 insists on them). Without a visible GPU and without TORCH_CUDA_ARCH_LIST,
the CUDA kernels are built for DEFAULT_CUDA_ARCHS, so a build node needs no GPU.

Build against the torch already installed (pip install --no-build-isolation .), never an
isolated environment: pip would download a multi-GB CUDA torch into it. Beside the extension the
build writes _C.build.json, the torch it was built against, which the import checks
(torchinit_ext/_extension.py).
"""

import glob
import json
import os
import re
import shutil
import subprocess
import sysconfig
import warnings

from setuptools import Command, find_packages, setup

try:
    import torch
except ImportError as error:
    raise SystemExit(
        "torchinit_ext builds against the torch already installed, and none is importable here: "
        "install torch first, then build without build isolation "
        "(`pip install --no-build-isolation .`), so that pip never downloads a torch of its own"
    ) from error

# A lower bound only: installing this package must never make pip remove or replace the user's
# torch. Releases past the newest checked one build with a warning (docs/design.md, "Supported
# torch").
OLDEST_TORCH = "2.11"
NEWEST_CHECKED_TORCH = "2.15"

# The CUDA architectures built when TORCH_CUDA_ARCH_LIST is unset and no GPU is visible: SASS for
# Turing (T4, RTX 20), Ampere (A100; its SASS runs on every 8.x GPU: A10, A40, RTX 30, L4, L40,
# RTX 40), Hopper (H100, H200), Blackwell data-centre (B200, B300) and desktop (RTX 50, RTX PRO),
# and PTX of the first, which any later GPU (Jetson Thor, the next ones) compiles at load. Each
# SASS architecture costs about 45 s of compiler time on one core (docs/cuda.md, "Building").
# Those the installed nvcc cannot build are left out.
DEFAULT_CUDA_ARCHS = ("7.5", "8.0", "9.0", "10.0", "12.0")


def nvcc_report(*args: str) -> str:
    """What `nvcc ARGS` prints (stdout and stderr), or '' without a working nvcc on PATH."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return ""
    run = subprocess.run([nvcc, *args], capture_output=True, text=True)
    return run.stdout + run.stderr if run.returncode == 0 else ""


def locate_cuda_home() -> None:
    """Sets CUDA_HOME, unless it or CUDA_PATH is set, to the toolkit nvcc itself runs from. torch
    guesses the folder two above the nvcc on PATH, which is wrong where that nvcc is a wrapper
    script (/usr/local/bin/nvcc gives /usr/local, which has no lib64 to link libcudart from)."""
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or torch.version.cuda is None:
        return
    top = re.search(
        r"^#\$ TOP=(.+)$",
        nvcc_report("--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull),
        re.MULTILINE,
    )
    if top:
        os.environ["CUDA_HOME"] = os.path.normpath(top.group(1).strip())


def default_cuda_arch_list() -> str:
    """DEFAULT_CUDA_ARCHS that this nvcc can build (`nvcc --list-gpu-arch`), PTX for the first."""
    listed = set(re.findall(r"compute_(\d+)", nvcc_report("--list-gpu-arch")))
    archs = [a for a in DEFAULT_CUDA_ARCHS if a.replace(".", "") in listed]
    if not archs:
        raise RuntimeError(
            f"nvcc can build none of the default CUDA architectures {DEFAULT_CUDA_ARCHS}: set "
            "TORCH_CUDA_ARCH_LIST to the architectures to build, or TORCHINIT_CUDA=0"
        )
    return ";".join([archs[0] + "+PTX", *archs[1:]])


def warn_if_torch_unchecked() -> None:
    release = tuple(int(part) for part in re.findall(r"\d+", torch.__version__)[:2])
    if release > tuple(int(part) for part in NEWEST_CHECKED_TORCH.split(".")):
        warnings.warn(
            f"torchinit_ext is checked with torch {OLDEST_TORCH} to {NEWEST_CHECKED_TORCH}; "
            f"building against torch {torch.__version__}, which it has not been checked with",
            stacklevel=1,
        )


warn_if_torch_unchecked()
locate_cuda_home()

# torch.utils.cpp_extension reads CUDA_HOME when it is imported.
from torch.utils.cpp_extension import (  # noqa: E402
    COMMON_NVCC_FLAGS,
    CUDA_HOME,
    BuildExtension,
    CppExtension,
    CUDAExtension,
    include_paths,
)

HERE = os.path.dirname(os.path.abspath(__file__))

# No FMA contraction: every SIMD level and the GPU compute the same bits. No errno from sqrt/log and
# no FP traps (values unchanged), so loops with selects vectorize. No -march: the build must run on
# any x86-64; the SIMD level is chosen at run time (csrc/cpu_runtime/simd.h). No -fopenmp: the
# kernels run on a thread pool of their own (csrc/cpu_runtime/parallel.h).
CXX_FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math"]

# The GPU computes the CPU's bits only without FMA contraction, in device and host code alike.
# --threads 0: nvcc compiles a file's architectures in parallel, one per core.
NVCC_FLAGS = [
    "-O3",
    "--fmad=false",
    "-Xcompiler",
    "-ffp-contract=off",
    "--expt-relaxed-constexpr",
    "--threads",
    "0",
]

# TORCHINIT_SANITIZE=1 (make sanitize): a CPU-only ASan+UBSan build. -O1 keeps the stack traces
# readable; -fno-wrapv so signed overflow is reported, not defined away.
SANITIZE = os.environ.get("TORCHINIT_SANITIZE") == "1"
SANITIZE_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
if SANITIZE:
    CXX_FLAGS = (
        [f for f in CXX_FLAGS if f != "-O3"]
        + SANITIZE_FLAGS
        + ["-fno-omit-frame-pointer", "-fno-wrapv", "-g", "-O1"]
    )
LINK_FLAGS = SANITIZE_FLAGS if SANITIZE else []


def cuda_build_reason() -> str | None:
    """None when the CUDA kernels are built, else why not (recorded in _C.build.json)."""
    wanted = os.environ.get("TORCHINIT_CUDA")
    if torch.version.cuda is None:
        missing = "torch was built without CUDA"
    elif CUDA_HOME is None:
        missing = "nvcc was not found (set CUDA_HOME)"
    else:
        missing = None
    if wanted == "1" and missing:
        raise RuntimeError(f"TORCHINIT_CUDA=1, but {missing}")
    if wanted == "0":
        return "TORCHINIT_CUDA=0"
    if SANITIZE:
        return "sanitizer builds are CPU-only"
    return missing


def sources(*patterns: str) -> list[str]:
    return sorted(
        os.path.relpath(path, HERE)
        for pattern in patterns
        for path in glob.glob(os.path.join(HERE, pattern))
    )


def version() -> str:
    """The version, defined once: torchinit_ext.__version__."""
    with open(os.path.join(HERE, "torchinit_ext", "__init__.py")) as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.MULTILINE).group(1)


def torch_header_flags() -> list[str]:
    """cuda_check's defines and include paths: an extension's, as C++17, with torch's headers and
    a one-line stub of c10/cuda/impl/cuda_cmake_macros.h, which the CPU wheel lacks."""
    stub = os.path.join(HERE, "build", "cuda-stub")
    os.makedirs(os.path.join(stub, "c10", "cuda", "impl"), exist_ok=True)
    with open(os.path.join(stub, "c10", "cuda", "impl", "cuda_cmake_macros.h"), "w") as f:
        f.write("#pragma once\n")
    defines = ["-DTORCH_API_INCLUDE_EXTENSION_H", "-DTORCH_EXTENSION_NAME=_C", "-std=c++17"]
    return [*defines, *("-I" + path for path in (stub, *include_paths()))]


def nvcc_check_command(arch: str) -> list[str]:
    """cuda_check's nvcc command for SASS of `arch` (sm_90), up to the output mode and the source:
    the CUDA build's flags. benchmarks/gpu_cost.py imports it, so it compiles as the build does."""
    # 3306: torch's own headers use C++20 bit-field initializers, which nvcc notes in C++17.
    return [
        "nvcc",
        *NVCC_FLAGS,
        *COMMON_NVCC_FLAGS,
        f"-arch={arch}",
        "-diag-suppress=3306",
        *torch_header_flags(),
    ]


class CudaCheck(Command):
    """`python setup.py cuda_check`: compiles every CUDA source with nvcc and the flags of the CUDA
    build, against torch's headers, without a GPU or a CUDA torch (CI runs it, so CUDA code that
    doesn't compile can't land). The CPU wheel lacks only c10/cuda/impl/cuda_cmake_macros.h, which
    a one-line stub in build/cuda-stub supplies. The standard is C++17, torch 2.11's default for
    extensions (later torches build them as C++20, which CI's CUDA-torch job compiles): the C++
    sources are syntax-checked as C++17 too, so nothing newer than the oldest supported torch
    takes can land."""

    description = "compile-check the CUDA sources with nvcc, and every source as C++17"
    user_options = []

    def initialize_options(self):
        pass

    def finalize_options(self):
        pass

    def run(self):
        python_include = "-I" + sysconfig.get_paths()["include"]
        nvcc = [*nvcc_check_command("sm_90"), "-c"]
        cxx = ["c++", *CXX_FLAGS, "-fsyntax-only", "-w", *torch_header_flags(), python_include]
        checks = [(source, [*nvcc, source, "-o", os.devnull]) for source in cuda_sources]
        checks += [(source, [*cxx, source]) for source in cpu_sources]
        for source, command in checks:
            print(f"== C++17 compile check: {source}", flush=True)
            subprocess.run(command, cwd=HERE, check=True)


class BuildExtensionWithInfo(BuildExtension):
    """build_ext that writes _C.build.json beside each extension it builds: the torch it was
    built against, which the import checks, and its CUDA kernels (architectures, or why none).
    Objects go to a build folder per torch, so switching torch rebuilds nothing stale."""

    def finalize_options(self):
        super().finalize_options()
        self.build_temp = os.path.join(self.build_temp, f"torch-{torch.__version__}")

    def info_path(self, ext) -> str:
        return os.path.join(os.path.dirname(self.get_ext_fullpath(ext.name)), BUILD_INFO)

    def build_extension(self, ext):
        super().build_extension(ext)
        with open(self.info_path(ext), "w") as f:
            json.dump(BUILD_INFO_FIELDS, f, indent=1)
            f.write("\n")

    def copy_extensions_to_source(self):  # --inplace: the record goes beside the copied .so
        super().copy_extensions_to_source()
        build_py = self.get_finalized_command("build_py")
        for ext in self.extensions:
            inplace, built = self._get_inplace_equivalent(build_py, ext)
            self.copy_file(
                os.path.join(os.path.dirname(built), BUILD_INFO),
                os.path.join(os.path.dirname(inplace), BUILD_INFO),
            )

    def get_outputs(self):
        return super().get_outputs() + [self.info_path(ext) for ext in self.extensions]


cpu_sources = sources(
    "csrc/registration/*.cpp", "csrc/composite/*.cpp", "csrc/cpu/*.cpp", "csrc/cpu_runtime/*.cpp"
)
cuda_sources = sources("csrc/cuda/*.cu")
no_cuda_reason = cuda_build_reason()
# With a visible GPU and no TORCH_CUDA_ARCH_LIST, torch builds for the visible GPUs.
if (
    no_cuda_reason is None
    and not os.environ.get("TORCH_CUDA_ARCH_LIST")
    and not torch.cuda.is_available()
):
    os.environ["TORCH_CUDA_ARCH_LIST"] = default_cuda_arch_list()

BUILD_INFO = "_C.build.json"
BUILD_INFO_FIELDS = {
    "torch": torch.__version__,
    "torch_cuda": torch.version.cuda,
    "cuda_kernels": no_cuda_reason is None,
    "cuda_arch_list": os.environ.get("TORCH_CUDA_ARCH_LIST") if no_cuda_reason is None else None,
    "no_cuda_reason": no_cuda_reason,
}
if no_cuda_reason is None:
    extension = CUDAExtension(
        "torchinit_ext._C",
        cpu_sources + cuda_sources,
        extra_compile_args={"cxx": CXX_FLAGS, "nvcc": NVCC_FLAGS},
        extra_link_args=LINK_FLAGS,
    )
else:
    extension = CppExtension(
        "torchinit_ext._C",
        cpu_sources,
        extra_compile_args={"cxx": CXX_FLAGS},
        extra_link_args=LINK_FLAGS,
    )

# Not when benchmarks/gpu_cost.py imports this file for nvcc_check_command.
if __name__ == "__main__":
    setup(
        name="torchinit_ext",
        version=version(),
        description="A drop-in torch.nn.init with compiled, parallel, counter-based-RNG kernels",
        packages=find_packages(include=["torchinit_ext", "torchinit_ext.*"]),
        ext_modules=[extension],
        cmdclass={"build_ext": BuildExtensionWithInfo, "cuda_check": CudaCheck},
        python_requires=">=3.10",
        install_requires=[f"torch>={OLDEST_TORCH}"],
    )
