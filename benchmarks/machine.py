"""The machine the bench runs on: the devices' names and slugs, the SIMD level of our CPU
kernels, and how busy other processes keep it, at start and beside the run."""

import datetime
import os
import platform
import re
import time
from dataclasses import dataclass

import torch

import torchinit_ext as ext


def cpu_model_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


SIMD_LEVELS = ("avx512", "avx2", "default")


def supported_simd_levels():
    """The levels of TORCHINIT_CPU_CAPABILITY this CPU can run, by its flags."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "").split()
    except OSError:
        flags = []
    has = {"avx512": "avx512f" in flags, "avx2": "avx2" in flags, "default": True}
    return [level for level in SIMD_LEVELS if has[level]]


def device_name(device):
    if device == "cuda":
        return torch.cuda.get_device_name()
    return cpu_model_name()


def device_slug(device):
    name = re.sub(r"\((r|tm)\)", "", device_name(device), flags=re.IGNORECASE)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return f"cpu-{slug}" if device == "cpu" else slug


def l2_cache_bytes():
    """The GPU's L2 size in bytes; None where this torch does not say."""
    return getattr(torch.cuda.get_device_properties(), "L2_cache_size", None) or None


def simd_level(device):
    """The level torchinit_ext's CPU kernels run with (TORCHINIT_CPU_CAPABILITY, read at load,
    or the best the CPU has); None for a GPU."""
    return ext.cpu_capability() if device == "cpu" else None


# Limits of a quiet machine, whatever its number of cores: the bench runs a thread per core and a
# parallel fill waits for its slowest thread, so a single busy process slows the rows. At start
# and over the run, the cores other processes keep busy (the machine's busy time in /proc/stat
# less the bench's own) must stay under QUIET_OTHERS; at start they are measured over
# START_LOOK seconds, since the load average also counts what has just ended, such as
# `make bench`'s own build. Without /proc/stat, the 1-minute load average at start must be under
# QUIET_LOAD: half a core leaves room for the bench's own start-up.
QUIET_LOAD = 0.5
QUIET_OTHERS = 0.25
START_LOOK = 1.0


@dataclass(frozen=True)
class Moment:
    """The date, the machine's load average and busy CPU time, and the bench's own CPU time: that
    of this process and its finished children (subprocess rows, --simd levels, the busy processes
    of --contention)."""

    date: datetime.datetime  # UTC
    load: tuple  # os.getloadavg(): 1, 5 and 15 minutes
    wall: float
    machine_cpu: float | None  # busy CPU seconds of every process since boot; None without /proc
    own_cpu: float

    @classmethod
    def now(cls):
        try:
            with open("/proc/stat") as stat:
                user, nice, system, _, _, irq, softirq = map(int, stat.readline().split()[1:8])
            machine_cpu = (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError):
            machine_cpu = None
        own = os.times()
        own_cpu = own.user + own.system + own.children_user + own.children_system
        date = datetime.datetime.now(datetime.timezone.utc)
        return cls(date, os.getloadavg(), time.monotonic(), machine_cpu, own_cpu)

    def others_since(self, start):
        """Cores that other processes kept busy on average from `start` to this moment."""
        if self.machine_cpu is None or start.machine_cpu is None or self.wall <= start.wall:
            return None
        others = self.machine_cpu - start.machine_cpu - (self.own_cpu - start.own_cpu)
        return max(0.0, others / (self.wall - start.wall))


def others_busy_now():
    """Cores other processes keep busy over the next START_LOOK seconds, while the bench sleeps;
    None without /proc/stat."""
    before = Moment.now()
    time.sleep(START_LOOK)
    return Moment.now().others_since(before)


def start_warning(start, busy_now):
    if busy_now is not None:
        if busy_now < QUIET_OTHERS:
            return None
        return (
            f"the machine is not quiet: other processes keep {busy_now:.2f} cores busy at start "
            f"(quiet: under {QUIET_OTHERS}); they take cores from the bench and make its times "
            "slower and noisier. Rerun on an idle machine for numbers to compare."
        )
    if start.load[0] < QUIET_LOAD:
        return None
    return (
        f"the machine is not quiet: its 1-minute load average is {start.load[0]:.2f} at start "
        f"(quiet: under {QUIET_LOAD}). Other processes ran in the last minute; those still running "
        "take cores from the bench and make its times slower and noisier. The load beside the "
        "run is reported at its end; rerun on an idle machine for numbers to compare."
    )


def run_warning(others):
    if others is None or others < QUIET_OTHERS:
        return None
    return (
        f"the machine was not quiet: other processes kept {others:.2f} cores busy on average "
        f"during the run (quiet: under {QUIET_OTHERS}), so its times are slower and noisier; "
        "rerun on an idle machine for numbers to compare."
    )


def end_warning(start, end):
    """The verdict on the run: by the load measured beside it where /proc/stat allows, else by
    the load average at start."""
    others = end.others_since(start)
    return start_warning(start, None) if others is None else run_warning(others)


def show_load(load):
    return ", ".join(f"{value:.2f}" for value in load)
