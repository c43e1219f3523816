"""Where and how to run, one rule each for training, generation, evaluation and the benchmarks:
the device, the autocast precision and attention kernels that go with it, and a private RNG."""

from __future__ import annotations

from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from typing import Iterator

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from multimodal.errors import DeviceUnavailableError


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' is CUDA when present, else the CPU; asking for CUDA without one is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError("CUDA was asked for but is not available here; use --device cpu or auto")
    return device


def has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX). Elsewhere bf16 is
    emulated and hundreds of times slower than fp32."""
    return (
        torch.backends.mkldnn.is_available()
        and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        and torch.backends.cpu.get_cpu_capability() != "DEFAULT"
    )


def cuda_lacks_bf16() -> bool:
    """Whether this machine's GPU has no bf16 units (before Ampere: V100, T4), so emulates bf16."""
    return torch.cuda.is_available() and not torch.cuda.is_bf16_supported(including_emulation=False)


def autocast_dtype(precision: str, device: torch.device, training: bool = True) -> torch.dtype | None:
    """The autocast dtype for a `--precision` value, or None for plain fp32. `auto` takes bf16 on
    CUDA, except that training on a GPU without bf16 units takes fp16 (the trainer scales its
    loss). On the CPU, training takes bf16 where the CPU has native bf16 units (markedly faster);
    generation stays fp32 there, so that the same seed gives the same pixels it always has."""
    if precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.float16 if training and cuda_lacks_bf16() else torch.bfloat16
    return torch.bfloat16 if training and has_native_bf16() else None


def precision_warning(precision: str, device: torch.device) -> str | None:
    """A line to show when `--precision` asks for what this machine can only emulate."""
    if precision == "bf16" and device.type == "cpu" and not has_native_bf16():
        return (
            "--precision bf16: this CPU has no bf16 units (AVX512-BF16 or AMX) and emulates it, "
            "tens to hundreds of times slower than fp32; --precision auto picks fp32 here"
        )
    return None


def attention_backends(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """In bf16 on the CPU, PyTorch's fused attention kernel is slower than plain matmul +
    softmax (UNet forward+backward 1.4-1.7×, measured in bench/); elsewhere SDPA chooses."""
    if device.type == "cpu" and dtype == torch.bfloat16:
        return sdpa_kernel([SDPBackend.MATH])
    return nullcontext()


@contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """Mixed precision in `dtype` (None: plain fp32) with the attention kernels that suit it."""
    with ExitStack() as stack:
        if dtype is not None:
            stack.enter_context(torch.autocast(device.type, dtype=dtype))
        stack.enter_context(attention_backends(device, dtype))
        yield


@contextmanager
def fork_rng(device: torch.device, seed: int | None = None) -> Iterator[None]:
    """Draw random numbers (seeded with `seed` when given) without moving the caller's global
    RNG: validation and sample sheets must not change what a resumed run computes."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if seed is not None:
            torch.manual_seed(seed)
        yield
