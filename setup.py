"""Builds torchinit_ext and its compiled extension, torchinit_ext._C: CPU kernels, plus the CUDA
kernels of csrc/cuda when torch was built with CUDA and nvcc is found (TORCHINIT_CUDA=0 skips
them, TORCHINIT_CUDA=1 insists on them).

Build against the torch already installed (pip install --no-build-isolation .), never an
isolated environment: pip would download a multi-GB CUDA torch into it.
"""

import glob
import os
import re
import subprocess

import torch
from setuptools import Command, find_packages, setup
from torch.utils.cpp_extension import (
    COMMON_NVCC_FLAGS,
    CUDA_HOME,
    BuildExtension,
    CppExtension,
    CUDAExtension,
    include_paths,
)

HERE = os.path.dirname(os.path.abspath(__file__))

# No FMA contraction: every SIMD level and the GPU compute the same bits. No errno from sqrt/log
# and no FP traps (values unchanged), so loops with selects vectorize. No -march: the build must
# run on any x86-64; the SIMD level is chosen at run time (csrc/cpu/simd.h). No -fopenmp: the
# kernels run on a thread pool of their own (csrc/cpu/parallel.h).
CXX_FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math"]

# The GPU computes the CPU's bits only without FMA contraction, in device and host code alike.
NVCC_FLAGS = ["-O3", "--fmad=false", "-Xcompiler", "-ffp-contract=off", "--expt-relaxed-constexpr"]

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


def build_cuda() -> bool:
    wanted = os.environ.get("TORCHINIT_CUDA")
    available = torch.version.cuda is not None and CUDA_HOME is not None
    if wanted == "1" and not available:
        raise RuntimeError("TORCHINIT_CUDA=1, but torch has no CUDA or nvcc was not found")
    return available and wanted != "0" and not SANITIZE


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


class CudaCheck(Command):
    """`python setup.py cuda_check`: compiles every CUDA source with nvcc and the flags of the CUDA
    build, against torch's headers, without a GPU or a CUDA torch (CI runs it, so CUDA code that
    doesn't compile can't land). The CPU wheel lacks only c10/cuda/impl/cuda_cmake_macros.h, which
    a one-line stub in build/cuda-stub supplies."""

    description = "compile-check the CUDA sources with nvcc"
    user_options = []

    def initialize_options(self):
        pass

    def finalize_options(self):
        pass

    def run(self):
        stub = os.path.join(HERE, "build", "cuda-stub")
        os.makedirs(os.path.join(stub, "c10", "cuda", "impl"), exist_ok=True)
        with open(os.path.join(stub, "c10", "cuda", "impl", "cuda_cmake_macros.h"), "w") as f:
            f.write("#pragma once\n")
        flags = [
            *NVCC_FLAGS,
            *COMMON_NVCC_FLAGS,
            "-std=c++20",
            "-arch=sm_90",
            "-DTORCH_API_INCLUDE_EXTENSION_H",
            "-DTORCH_EXTENSION_NAME=_C",
        ]
        includes = ["-I" + path for path in (stub, *include_paths())]
        for source in cuda_sources:
            print(f"== nvcc compile check: {source}", flush=True)
            subprocess.run(
                ["nvcc", *flags, *includes, "-c", source, "-o", os.devnull], cwd=HERE, check=True
            )


cpu_sources = sources("csrc/*.cpp", "csrc/cpu/*.cpp")
cuda_sources = sources("csrc/cuda/*.cu")
if build_cuda():
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

setup(
    name="torchinit_ext",
    version=version(),
    description="A drop-in torch.nn.init with compiled, parallel, counter-based-RNG kernels",
    packages=find_packages(include=["torchinit_ext", "torchinit_ext.*"]),
    ext_modules=[extension],
    cmdclass={"build_ext": BuildExtension, "cuda_check": CudaCheck},
    python_requires=">=3.10",
    install_requires=["torch>=2.11"],
)
