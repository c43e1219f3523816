"""Drawing a preset's built-in synthetic set on first use (the preset says which, and how)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from multimodal import presets
from multimodal.data import scenes, shapes
from multimodal.data.synthetic import ensure_drawn, read_params

# Each kind of built-in set: its drawing, and the file that records what it was drawn with.
_KINDS = {
    "shapes": (shapes.generate_shapes_dataset, shapes.PARAMS_FILE),
    "scenes": (scenes.generate_scenes_dataset, scenes.PARAMS_FILE),
}


def is_builtin(preset: str) -> bool:
    return presets.get(preset).builtin is not None


def ensure_builtin_dataset(preset: str, root: str | os.PathLike, image_size: int, seed: int = 0) -> None:
    """The preset's built-in set at `image_size` under `root`: drawn (with `seed`) where it is
    missing, drawn again where it was drawn with another image size or options; a folder of
    someone's own data is left alone."""
    builtin = presets.get(preset).builtin
    generate, params_file = _KINDS[builtin.kind]
    ensure_drawn(root, params_file, {"image_size": image_size} | dict(builtin.options), generate, seed)


def builtin_params(kind: str, root: str | os.PathLike) -> dict[str, Any]:
    """What the built-in set of `kind` under `root` was drawn with ({} where it does not say)."""
    return read_params(Path(root), _KINDS[kind][1]) or {}
