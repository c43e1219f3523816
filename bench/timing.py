"""The few helpers every section uses: a timer, a FLOP counter, the matmul peak, the machine."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def precision_name(dtype: torch.dtype | None) -> str:
    return "fp32" if dtype is None else {torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype] + " autocast"


def cpu_ticks() -> tuple[int, int]:
    """(busy clock ticks of the whole machine, ticks of this process) from /proc; (0, 0) without it.
    Busy counts the hypervisor's steal too: time another guest took from this one."""
    try:
        with open("/proc/stat") as stat:
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in stat.readline().split()[1:9])
        with open("/proc/self/stat") as own:
            utime, stime = (int(v) for v in own.read().rsplit(")", 1)[1].split()[11:13])
    except (OSError, ValueError):
        return 0, 0
    return user + nice + system + irq + softirq + steal, utime + stime


@dataclass
class Timer:
    """Median wall time of a call: one warm-up call, then at least `min_repeats` timed calls,
    and more while their total stays under `budget_s` (at most `max_repeats`).

    On a shared machine another busy process makes two OpenMP threads on two cores stall each
    other, inflating times up to tenfold. So a series during which other processes used more
    than `others_limit` cores on average is measured again, up to `attempts` times in all;
    `redone` and `still_busy` count how often that happened.
    """

    device: torch.device
    budget_s: float = 2.0
    min_repeats: int = 3
    max_repeats: int = 15
    others_limit: float = 0.25
    attempts: int = 4
    redone: int = 0
    still_busy: int = 0

    def once(self, fn: Callable[[], Any]) -> float:
        synchronize(self.device)
        start = time.perf_counter()
        fn()
        synchronize(self.device)
        return time.perf_counter() - start

    def series(self, fn: Callable[[], Any]) -> list[float]:
        self.once(fn)
        times: list[float] = []
        while len(times) < self.max_repeats and (len(times) < self.min_repeats or sum(times) < self.budget_s):
            times.append(self.once(fn))
        return times

    def __call__(self, fn: Callable[[], Any]) -> float:
        for attempt in range(self.attempts):
            machine, own = cpu_ticks()
            start = time.perf_counter()
            times = self.series(fn)
            wall = time.perf_counter() - start
            machine_after, own_after = cpu_ticks()
            others = (machine_after - machine - (own_after - own)) / os.sysconf("SC_CLK_TCK") / wall
            if wall < 0.3 or others <= self.others_limit:  # under 0.3 s the 10 ms ticks cannot tell
                break
            if attempt == self.attempts - 1:
                self.still_busy += 1
            else:
                self.redone += 1
                time.sleep(1.0)  # let a short burst of other work pass
        return statistics.median(times)


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call, as torch.utils.flop_counter counts them (matmuls, convolutions, attention)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def peak_sizes(device: torch.device) -> tuple[int, ...]:
    """The sides of the square products `matmul_peak` tries."""
    return (4096, 8192) if device.type == "cuda" else (1024, 2048, 4096)


def peak_kernels(device: torch.device) -> tuple[str, ...]:
    """The routes to a product `matmul_peak` tries. On a CPU torch has two GEMM libraries:
    matmul goes to MKL (or OpenBLAS), a 1×1 convolution to oneDNN, which the UNet's convolutions
    use too; on an AMD EPYC MKL's products read at about 60% of oneDNN's."""
    return ("matmul",) if device.type == "cuda" else ("matmul", "1×1 convolution")


def matmul_peak(device: torch.device, dtype: torch.dtype, timer: Timer) -> float:
    """GFLOP/s of the fastest of a few large square products: the most this machine does with
    `dtype`. One size is not enough on a CPU (a 4096² product spills the caches and reads below
    what 1024²–2048² reach), nor one library (`peak_kernels`)."""
    best = 0.0
    for n in peak_sizes(device):
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        image, weight = a.reshape(1, n, n, 1), b.reshape(n, n, 1, 1)  # n channels at n positions, to n channels
        products = {"matmul": lambda: a @ b, "1×1 convolution": lambda: torch.nn.functional.conv2d(image, weight)}
        with torch.no_grad():
            for kernel in peak_kernels(device):
                best = max(best, 2 * n**3 / timer(products[kernel]) / 1e9)
    return best


def peak_rss_mb() -> float:
    """The largest resident set of this process, in MiB. On Linux, VmHWM: getrusage's ru_maxrss
    keeps the peak of the parent a spawned process was forked from, so it would report the
    benchmark's own peak for every training process."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # no /proc: ru_maxrss, in KiB


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_features() -> str:
    """The vector and matrix units that decide CPU matmul speed, as the kernel lists them."""
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    try:
        with open("/proc/cpuinfo") as info:
            flags = next(line for line in info if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    return " ".join(flag for flag in wanted if flag in flags) or "none of avx2/avx512/amx"


def describe_machine(device: torch.device) -> dict[str, str]:
    """What the document says about where the numbers came from."""
    machine = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cpu_features": cpu_features(),
        "cores": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        machine["gpu"] = torch.cuda.get_device_name(device)
        machine["cuda"] = str(torch.version.cuda)
    return machine
