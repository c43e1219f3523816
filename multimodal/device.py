"""Where to run: one rule for training, generation and evaluation."""

from __future__ import annotations

import torch


class DeviceUnavailableError(ValueError):
    """CUDA was asked for on a machine without it."""


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' is CUDA when present, else the CPU; asking for CUDA without one is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError("CUDA was asked for but is not available here; use --device cpu or auto")
    return device
