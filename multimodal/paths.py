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

and the names of generated image files, which --data-dir names WebDataset shards, and writing a
folder so that a crash never leaves half of it. Imports nothing heavy, so the command lines can
check every path before torch loads.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from multimodal.config import DATA_FIELDS, default_data_dir
from multimodal.errors import CheckpointError, InvalidInputError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TRAINING_WEIGHTS = "training_weights.safetensors"
TRAINING_STATE = "training_state.safetensors"
TRAINING_DISCRIMINATOR = "training_discriminator.safetensors"  # the autoencoder stage's, in latest/
TRAINER_STATE = "trainer_state.json"
METRICS_NAME = "metrics.csv"  # a run folder's table of epochs: train.py writes it, visualize.py reads it
ADAPTER_CONFIG = "adapter_config.json"  # peft's file names, so peft's own tools read the folder
ADAPTER_WEIGHTS = "adapter_model.safetensors"
BASE_POINTER = "base_checkpoint.json"
EXPORT_NAME = "export.json"  # what an ONNX export holds besides its graphs: the sampler, tokenizer, sizes
RUN_CHECKPOINTS = ("best", "latest")  # inside a run folder, in the order generation prefers them
# Where a checkpoint is looked for when none is named: train.py's default output, then `make demo`'s.
DEFAULT_RUN_DIRS = (Path("checkpoints"), Path("checkpoints/demo"))


def resolve_checkpoint(path: str | os.PathLike | None = None) -> Path:
    """The checkpoint folder to load: `path` itself when it holds a model, its `best/` or else
    `latest/` when it is a training run folder. With no path, the first of `checkpoints/` (what
    train.py writes) and `checkpoints/demo/` (what `make demo` writes) that holds one.
    A CheckpointError says what is wrong (missing, not a folder, no checkpoint inside)."""
    if path is None:
        for run in DEFAULT_RUN_DIRS:
            found = _checkpoint_in(run)
            if found is not None:
                return found
        raise CheckpointError(
            f"no checkpoint in {' or '.join(f'{run}/' for run in DEFAULT_RUN_DIRS)}; train one first "
            "(make demo, or python train.py --preset shapes) or pass --checkpoint DIR"
        )
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
    """An adapter folder's record of its base: {"base_checkpoint": path, "sha256": of its weights}."""
    adapter = Path(adapter)
    if not adapter.is_dir():
        raise CheckpointError(f"adapter {adapter} does not exist")
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, BASE_POINTER):
        if not (adapter / name).is_file():
            raise CheckpointError(f"adapter {adapter} is incomplete: {name} is missing")
    try:
        pointer = json.loads((adapter / BASE_POINTER).read_text())
        return {"base_checkpoint": str(pointer["base_checkpoint"]), "sha256": str(pointer["sha256"])}
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{adapter / BASE_POINTER} is not a base pointer: {error}") from None


def adapter_base(adapter: str | os.PathLike) -> Path:
    """The base checkpoint an adapter was trained from, as its pointer records it."""
    return Path(read_base_pointer(adapter)["base_checkpoint"])


def being_written(target: Path) -> Path:
    """Where a new version of folder `target` is written before it is renamed into place."""
    return target.with_name(f".{target.name}.tmp")


def set_aside(target: Path) -> Path:
    """Where the old version of folder `target` waits while the new one is renamed into place."""
    return target.with_name(f".{target.name}.old")


@contextmanager
def folder_written_in_place(target: str | os.PathLike) -> Iterator[Path]:
    """A fresh temporary folder beside `target` to write into. When the block ends well it
    replaces `target` (the old one is moved aside, then removed), so a crash never leaves half a
    folder; when it raises, the temporary folder is removed and `target` is as it was."""
    target = Path(target)
    temporary = being_written(target)
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    try:
        yield temporary
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    previous = set_aside(target)
    shutil.rmtree(previous, ignore_errors=True)
    if target.exists():
        target.rename(previous)
    temporary.rename(target)
    shutil.rmtree(previous, ignore_errors=True)


def read_trainer_state(checkpoint: str | os.PathLike) -> dict[str, Any] | None:
    """The trainer's record in a checkpoint written by train.py (None for a plain save_pretrained folder)."""
    try:
        state = json.loads((Path(checkpoint) / TRAINER_STATE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def trained_data(checkpoint: str | os.PathLike) -> tuple[Path, dict]:
    """The data set the checkpoint was trained on and how it was read (its layout, columns and
    validation fraction), as its trainer state records them (the data folder as an absolute
    path since this version; older runs record the preset, or nothing: shapes)."""
    state = read_trainer_state(checkpoint) or {}
    train_config = state.get("train_config") if isinstance(state.get("train_config"), dict) else {}
    options = {name: train_config[name] for name in DATA_FIELDS if name in train_config}
    if train_config.get("data_dir"):
        return Path(train_config["data_dir"]), options
    return default_data_dir(train_config.get("preset", "shapes")), options


def trained_preset(checkpoint: str | os.PathLike) -> str | None:
    """The preset a trainer-written checkpoint was trained with (None when it does not say)."""
    train_config = (read_trainer_state(checkpoint) or {}).get("train_config")
    return train_config.get("preset") if isinstance(train_config, dict) else None


# WebDataset shards: what `--data-dir` names when it is not a dataset folder.
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")


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


# Image formats a generated picture can be written in, by file extension (PIL's names).
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def image_format(path: str | os.PathLike) -> str:
    """The format a file name asks for by its extension (png, jpg, webp); others are refused."""
    suffix = Path(path).suffix.lower()
    if suffix not in IMAGE_FORMATS:
        found = f"{suffix!r}" if suffix else "a name without an extension"
        raise InvalidInputError(f"{path}: cannot write an image as {found}; use {', '.join(IMAGE_FORMATS)}")
    return IMAGE_FORMATS[suffix]


def slugify(text: str, max_length: int = 60) -> str:
    """A file-name-safe form of a prompt: 'A red circle!' → 'a-red-circle' (Unicode letters stay)."""
    slug = re.sub(r"[^\w]+", "-", text.lower()).strip("-_")
    return slug[:max_length].rstrip("-_") or "prompt"


def image_file_names(prompts: Sequence[str], count: int, extension: str = ".png") -> list[list[str]]:
    """`names[i][j]`: `<prompt slug>_<j><extension>` for image j of prompt i; prompts with the
    same slug get a numbered suffix so that no file overwrites another."""
    names, used = [], set()
    for prompt in prompts:
        slug, n = slugify(prompt), 2
        while slug in used:
            slug, n = f"{slugify(prompt)}-{n}", n + 1
        used.add(slug)
        names.append([f"{slug}_{j}{extension}" for j in range(count)])
    return names


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """Write `text` beside `path` and rename it into place: a reader never sees half a file."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.replace(path)
    return path
