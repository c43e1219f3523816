"""The built-in synthetic sets by preset name: what each shows, and drawing it on first use."""

from __future__ import annotations

import os

from multimodal.data import scenes, shapes
from multimodal.data.synthetic import ensure_drawn

# What a model of each built-in preset has seen: all it can describe or draw.
BUILTIN_CONTENTS: dict[str, str] = {
    "shapes": "one coloured circle, square or triangle on black",
    "shapes-holdout": "one coloured circle, square or triangle on black",
    "scenes": "two coloured circles, squares or triangles side by side on black",
}

# Each set's generator, the file recording its parameters, and the options the preset sets.
_SETS = {
    "shapes": (shapes.generate_shapes_dataset, shapes.PARAMS_FILE, {"holdout": False}),
    "shapes-holdout": (shapes.generate_shapes_dataset, shapes.PARAMS_FILE, {"holdout": True}),
    "scenes": (scenes.generate_scenes_dataset, scenes.PARAMS_FILE, {}),
}


def is_builtin(preset: str) -> bool:
    return preset in _SETS


def ensure_builtin_dataset(preset: str, root: str | os.PathLike, image_size: int, seed: int = 0) -> None:
    """The preset's built-in set at `image_size` under `root`: drawn (with `seed`) where it is
    missing, drawn again where it was drawn with another image size or options; a folder of
    someone's own data is left alone."""
    generate, params_file, options = _SETS[preset]
    ensure_drawn(root, params_file, {"image_size": image_size} | options, generate, seed)
