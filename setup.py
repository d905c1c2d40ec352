"""Builds torchinit_ext and its compiled extension, torchinit_ext._C (CPU kernels).

Build against the torch already installed (pip install --no-build-isolation .), never an
isolated environment: pip would download a multi-GB CUDA torch into it.
"""

import glob
import os

from setuptools import find_packages, setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

HERE = os.path.dirname(os.path.abspath(__file__))

# No FMA contraction: every SIMD clone (and, later, the GPU) computes the same bits.
# No errno from sqrt/log and no FP traps (values unchanged), so loops with selects vectorize. No -march: the build must run on any x86-64;
# SIMD paths are chosen at run time (target_clones in csrc/cpu/loops.h).
# -fopenmp: at::parallel_for is inline and runs on one thread without it.
CXX_FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-fopenmp"]

sources = sorted(
    os.path.relpath(p, HERE)
    for p in glob.glob(os.path.join(HERE, "csrc", "*.cpp"))
    + glob.glob(os.path.join(HERE, "csrc", "cpu", "*.cpp"))
)

setup(
    name="torchinit_ext",
    version="0.1.0",
    description="A drop-in torch.nn.init with compiled, parallel, counter-based-RNG kernels",
    packages=find_packages(include=["torchinit_ext", "torchinit_ext.*"]),
    ext_modules=[
        CppExtension(
            "torchinit_ext._C",
            sources,
            extra_compile_args={"cxx": CXX_FLAGS},
            extra_link_args=["-fopenmp"],
        )
    ],
    cmdclass={"build_ext": BuildExtension},
    python_requires=">=3.10",
    install_requires=["torch>=2.11"],
)
