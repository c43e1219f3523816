"""File and folder names of checkpoints and runs, and finding a checkpoint, in one place.

    <run>/latest/, best/                    checkpoint folders (a training run writes both)
    <checkpoint>/config.json                the model's configuration
    <checkpoint>/model.safetensors          its weights (the EMA weights when a trainer wrote it)
    <checkpoint>/tokenizer files            BERT's tokenizer
    <checkpoint>/training_weights.safetensors, training_state.safetensors, trainer_state.json
    (and training_discriminator.safetensors with an autoencoder stage)
                                            what resuming needs (latest/ only)
    <adapter>/adapter_config.json, adapter_model.safetensors   a LoRA adapter (peft's names)
    <adapter>/base_checkpoint.json          the checkpoint it was trained from
    <export>/export.json, *.onnx            an ONNX export (`python -m multimodal.export`)

and which --data-dir names WebDataset shards. Imports nothing heavy, so the command lines can
check every path before torch loads. Writing files whole is `files.py`'s; what a checkpoint
records of its training, `provenance.py`'s; the names of generated pictures, `images.py`'s.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

from multimodal.errors import CheckpointError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TRAINING_WEIGHTS = "training_weights.safetensors"
TRAINING_STATE = "training_state.safetensors"
TRAINING_DISCRIMINATOR = "training_discriminator.safetensors"  # the autoencoder stage's, in latest/
TRAINER_STATE = "trainer_state.json"
METRICS_NAME = "metrics.csv"  # a run folder's table of epochs: train.py writes it, visualize.py reads it
CURVES_NAME = "curves.png"  # and its plot of them
ADAPTER_CONFIG = "adapter_config.json"  # peft's file names, so peft's own tools read the folder
ADAPTER_WEIGHTS = "adapter_model.safetensors"
BASE_POINTER = "base_checkpoint.json"
POINTER_KEYS = ("base_checkpoint", "sha256")  # what BASE_POINTER holds: the base's path, its weights' SHA-256
EXPORT_NAME = "export.json"  # what an ONNX export holds besides its graphs: the sampler, tokenizer, sizes
RUN_CHECKPOINTS = ("best", "latest")  # inside a run folder, in the order generation prefers them
# Where a checkpoint is looked for when none is named: train.py's default output, then `make demo`'s.
DEFAULT_RUN_DIRS = (Path("checkpoints"), Path("checkpoints/demo"))


def resolve_checkpoint(path: str | os.PathLike | None = None, revision: str | None = None) -> Path:
    """The checkpoint folder to load: `path` itself when it holds a model, its `best/` or else
    `latest/` when it is a training run folder, the local snapshot of a Hub repo when `path` is
    a repo id ("user/name" at `revision`, `multimodal.hub`). With no path, the first of
    `checkpoints/` (what train.py writes) and `checkpoints/demo/` (what `make demo` writes) that
    holds one. A CheckpointError says what is wrong (missing, not a folder, no checkpoint inside)."""
    if path is None:
        for run in DEFAULT_RUN_DIRS:
            found = _checkpoint_in(run)
            if found is not None:
                return found
        raise CheckpointError(
            f"no checkpoint in {' or '.join(f'{run}/' for run in DEFAULT_RUN_DIRS)}; train one first "
            "(make demo, or python train.py --preset shapes) or pass --checkpoint DIR"
        )
    from multimodal import hub  # huggingface_hub loads only for a repo id

    if hub.is_repo_id(path):
        path = hub.download(str(path), revision)
    directory = Path(path)
    if directory.name == WEIGHTS_NAME and directory.is_file():
        directory = directory.parent  # a person pointed at the weights file itself
    found = _checkpoint_in(directory)
    if found is not None:
        return found
    if not directory.exists():
        raise CheckpointError(f"checkpoint {directory} does not exist")
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint {directory} is a file; give the folder that holds {CONFIG_NAME}")
    adapter = next((d for d in (directory, *(directory / name for name in RUN_CHECKPOINTS))
                    if (d / ADAPTER_CONFIG).is_file()), None)
    if adapter is not None:  # what a --lora-rank run writes
        raise CheckpointError(f"{adapter} is a LoRA adapter, not a checkpoint: load it with --adapter {adapter}, "
                              "or merge it into one (python -m multimodal.adapters merge)")
    runs = sorted(child.name for child in directory.iterdir() if (child / CONFIG_NAME).is_file())
    hint = f"; it holds the checkpoints {', '.join(runs)}" if runs else ""
    raise CheckpointError(
        f"{directory} is neither a checkpoint (no {CONFIG_NAME}) nor a training run (no best/ or latest/){hint}"
    )


def _checkpoint_in(directory: Path) -> Path | None:
    if (directory / CONFIG_NAME).is_file():
        return directory
    for name in RUN_CHECKPOINTS:
        if (directory / name / CONFIG_NAME).is_file():
            return directory / name
    return None


def read_base_pointer(adapter: str | os.PathLike) -> dict[str, str]:
    """An adapter folder's record of its base: {"base_checkpoint": path, "sha256": of its weights},
    and "revision" (the commit) when the base is a Hub repo, "base_checkpoint" its repo id."""
    adapter = Path(adapter)
    if adapter.is_file():
        raise CheckpointError(f"adapter {adapter} is a file; give the folder that holds {ADAPTER_CONFIG}")
    if not adapter.is_dir():
        raise CheckpointError(f"adapter {adapter} does not exist")
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, BASE_POINTER):
        if not (adapter / name).is_file():
            raise CheckpointError(f"adapter {adapter} is incomplete: {name} is missing")
    try:
        pointer = json.loads((adapter / BASE_POINTER).read_text())
        if not isinstance(pointer, dict) or not all(isinstance(pointer.get(key), str) for key in POINTER_KEYS):
            raise ValueError(f"expected a JSON object of the strings {' and '.join(POINTER_KEYS)}")
        if not isinstance(pointer.get("revision", ""), str):
            raise ValueError("its revision must be a string (a Hub commit)")
        return {key: pointer[key] for key in (*POINTER_KEYS, "revision") if key in pointer}
    except ValueError as error:
        raise CheckpointError(f"{adapter / BASE_POINTER} is not a base pointer: {error}") from None


def adapter_base(adapter: str | os.PathLike) -> Path:
    """The base checkpoint an adapter was trained from, as its pointer records it: a folder, or
    the Hub repo's snapshot at the recorded commit."""
    pointer = read_base_pointer(adapter)
    if "revision" in pointer:
        return resolve_checkpoint(pointer["base_checkpoint"], pointer["revision"])
    return Path(pointer["base_checkpoint"])


# WebDataset shards: what `--data-dir` names when it is not a dataset folder.
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def is_link_loop(path: str | os.PathLike) -> bool:
    """Whether `path`, or a folder on the way to it, is a symbolic link that leads back to itself:
    every later look at it (exists, resolve) would fail or lie."""
    try:
        os.stat(path)
    except OSError as error:
        return error.errno == errno.ELOOP
    return False


def is_shard_spec(data_dir: str | os.PathLike) -> bool:
    """Whether `data_dir` names WebDataset shards: a brace pattern ('shards/{000000..000099}.tar'),
    a .tar file, or a folder of them (or whose train/ folder holds them)."""
    text = str(data_dir)
    if "{" in text or text.endswith(SHARD_SUFFIXES):
        return True
    root = Path(text)
    return any(
        any(p.name.endswith(SHARD_SUFFIXES) for p in folder.iterdir())
        for folder in (root, root / "train")
        if folder.is_dir()
    )
