"""`make gpu-check`: the one command for a GPU machine (the device tool's, with its own python3 and
torch, and no network).

1. The GPU: name, compute capability, driver, torch and CUDA versions. Without a visible GPU it
   stops here with one "no GPU" line (exit 2), unless TORCH_CUDA_ARCH_LIST is set: then it goes
   on as a dry run, as far as a machine without a GPU can go.
2. The build: the CUDA kernels for that GPU's architecture alone (TORCH_CUDA_ARCH_LIST=major.minor),
   compiled by every core.
3. The tests: tests/test_cuda.py (device invariance: CPU and GPU values bit for bit, CUDA graph
   capture and replay, exact sparse_ zero counts, orthogonality), the build's tests, and the CPU
   side of the RNG contract (golden values), the GPU bench's method (tests/test_bench_method.py,
   which a dry run checks too), with every skip and its reason listed.
4. The GPU bench: python -m benchmarks.bench --device cuda, every fill beyond the L2 as a fraction
   of the device's own fill_ bandwidth, against stock; its JSON copied to
   benchmarks/results/<device>-<date>.json, a new file (the bench names each run's results by
   device, date and time).

Everything it writes (the logs, the pytest report, the bench JSON and chart) goes straight to $OUT
when that is set (so a run stopped at its time limit still returns what it wrote), else to
build/gpu-check (GPU_CHECK_LOGS overrides either). Exit status: 0 when every step passed, 1 when
a step failed, 2 without a GPU.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
TESTS = [
    "tests/test_cuda.py",
    "tests/test_build.py",
    "tests/test_golden_values.py",
    "tests/test_bench_method.py",
]
GPU_BUILD_FOLDERS = ["--build-temp", "build/gpu-check-temp", "--build-lib", "build/gpu-check-lib"]
OUT = Path(os.environ["OUT"]) if os.environ.get("OUT") else None


def say(message: str) -> None:
    print(f"== gpu-check: {message}", flush=True)


def driver_version() -> str | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    run = subprocess.run(
        [smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True
    )
    return run.stdout.strip().splitlines()[0] if run.returncode == 0 and run.stdout else None


def the_gpu() -> dict | None:
    """The GPU and the versions around it, or None without a visible GPU."""
    if torch.version.cuda is None or not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability()
    return {
        "device": torch.cuda.get_device_name(),
        "capability": f"{major}.{minor}",
        "driver": driver_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": sys.version.split()[0],
    }


def step(name: str, command: list[str], env: dict | None = None, log: Path | None = None) -> bool:
    say(f"{name}: {' '.join(command)}")
    start = time.perf_counter()
    with open(log, "w") if log else open(os.devnull, "w") as sink:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for line in process.stdout:
            sys.stdout.write(line)
            sink.write(line)
        status = process.wait()
    say(
        f"{name}: {'passed' if status == 0 else f'FAILED (exit {status})'} "
        f"in {time.perf_counter() - start:.0f} s"
    )
    return status == 0


def main() -> int:
    gpu = the_gpu()
    arch = gpu["capability"] if gpu else os.environ.get("TORCH_CUDA_ARCH_LIST")
    if gpu:
        say(json.dumps(gpu))
    elif torch.version.cuda is None:
        say(f"no GPU: torch {torch.__version__} was built without CUDA")
        return 2
    elif arch is None:
        say(f"no GPU: torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device")
        return 2
    else:
        say(f"no GPU visible: dry run for TORCH_CUDA_ARCH_LIST={arch}, up to the first CUDA call")
    logs = Path(os.environ.get("GPU_CHECK_LOGS") or OUT or ROOT / "build" / "gpu-check")
    logs.mkdir(parents=True, exist_ok=True)
    build_env = dict(
        os.environ, TORCH_CUDA_ARCH_LIST=arch, MAX_JOBS=str(os.cpu_count()), TORCHINIT_CUDA="1"
    )
    python = sys.executable
    passed = step(
        "build",
        # Build folders of its own: the usual build's stay as they are, for its architectures.
        [python, "setup.py", "-q", "build_ext", "--inplace", *GPU_BUILD_FOLDERS],
        env=build_env,
        log=logs / "build.log",
    )
    test_env = dict(os.environ, PYTHONPATH=str(ROOT))
    if passed:
        junit = logs / "pytest.xml"
        passed &= step(
            "tests",
            [python, "-m", "pytest", "-q", "-rs", f"--junitxml={junit}", *TESTS],
            env=test_env,
            log=logs / "pytest.log",
        )
    if passed and gpu is None:
        say("no GPU: the build and test collection ran; the bench needs a CUDA device")
        return 2
    if passed:
        earlier = set(logs.glob("*.json"))  # a reused logs folder keeps earlier runs' results
        passed &= step(
            "bench",
            [python, "-m", "benchmarks.bench", "--device", "cuda", "--out", str(logs)],
            env=test_env,
            log=logs / "bench.log",
        )
        for result in set(logs.glob("*.json")) - earlier:
            target = ROOT / "benchmarks" / "results" / result.name
            if target.exists():  # results are never written over
                say(f"bench: {target} exists, {result} left where it is")
            else:
                shutil.copy(result, target)
                say(f"bench: results copied to {target}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
