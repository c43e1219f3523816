"""Reading safetensors files, in one place: checkpoints, adapters and a run's training state are
files people copy, download and cut short, and each one that cannot be used is a
CheckpointError that names it (never safetensors' or torch's own error)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model
from torch import nn

from multimodal.errors import CheckpointError
from multimodal.paths import CONFIG_NAME


def _unreadable(path: Path, error: Exception) -> CheckpointError:
    if not path.exists():
        return CheckpointError(f"{path} is missing")
    return CheckpointError(f"{path} cannot be read ({error}): the file is damaged or cut short; copy it again, "
                           "or use another checkpoint")


def read_safetensors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Every tensor of the safetensors file `path`."""
    try:
        return load_file(str(path), device=str(device))
    except (OSError, SafetensorError) as error:
        raise _unreadable(Path(path), error) from None


def mismatch(error: RuntimeError) -> str:
    """The first line of torch's report of tensors that do not fit a module (it lists them all)."""
    lines = str(error).strip().splitlines()
    return next((line.strip() for line in lines if "size mismatch" in line), lines[0] if lines else "")


def _names(names: list[str]) -> str:
    return ", ".join(sorted(names)[:5]) + (" …" if len(names) > 5 else "")


def load_safetensors(
    module: nn.Module, path: str | Path, device: str | torch.device = "cpu", described_by: str = CONFIG_NAME,
    may_lack: tuple[str, ...] = (),
) -> None:
    """Load the safetensors file `path` into `module`: every tensor of the module and no other,
    each of its shape, except that it may lack those `may_lack` names (tensors newer than some
    files: the module keeps its own values). One that does not fit says so in one line, naming
    `path` and the file that describes the module (`described_by`)."""
    path = Path(path)
    try:
        missing, unexpected = load_model(module, str(path), strict=False, device=str(device))
    except (OSError, SafetensorError) as error:
        raise _unreadable(path, error) from None
    except RuntimeError as error:  # shapes that do not match the module's
        raise CheckpointError(f"{path} does not match {described_by}: {mismatch(error)}") from None
    missing = [name for name in missing if name not in may_lack]
    parts = []
    if missing:
        parts.append(f"missing tensors: {_names(list(missing))}")
    if unexpected:
        parts.append(f"unexpected tensors: {_names(list(unexpected))}")
    if parts:
        raise CheckpointError(f"{path} does not fit the model: {'; '.join(parts)}")
