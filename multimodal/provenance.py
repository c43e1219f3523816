"""What a trained checkpoint records of its training (its trainer_state.json): the preset it
started from and the data it read. Generation, evaluation and the page read it to draw, judge
and search as the checkpoint was trained; torch-free, so the command lines ask it first."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from multimodal.config import DATA_FIELDS, default_data_dir
from multimodal.paths import TRAINER_STATE


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
