"""The built-in shapes dataset: one coloured shape on black, captioned by its attributes.

It exists so the whole pipeline (contrastive, captioning, text-to-image) can be trained and
checked in minutes without COCO: every caption is fully determined by the picture and vice
versa, so a working model must reach near-perfect retrieval and attribute accuracy.
It is written in COCO's layout so that one loader (`CocoCaptionDataset`) reads both.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from multimodal.config import ShapesConfig
from multimodal.errors import ConfigError, DatasetLayoutError


class ShapesFolderError(DatasetLayoutError, FileExistsError):
    """The folder asked for holds something other than a shapes dataset: it is left alone."""


SHAPES = ("circle", "square", "triangle")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 230),
    "yellow": (235, 215, 50),
    "purple": (160, 70, 210),
    "cyan": (50, 200, 210),
}
# Colours drawn only when asked for (`--colors`): new concepts to fine-tune a trained model on,
# so that the standard sets, and every model trained on them, stay as they are.
EXTRA_COLORS: dict[str, tuple[int, int, int]] = {"orange": (240, 140, 20)}
PALETTE = COLORS | EXTRA_COLORS  # every colour the renderer draws and the reader names
# Side of the shape's bounding box as a fraction of the image side.
SIZES: dict[str, float] = {"small": 0.25, "large": 0.5}
# Centre of the bounding box as fractions (x, y) of the image side.
POSITIONS: dict[str, tuple[float, float]] = {
    "left": (0.27, 0.5),
    "right": (0.73, 0.5),
    "top": (0.5, 0.27),
    "bottom": (0.5, 0.73),
    "center": (0.5, 0.5),
}
POSITION_PHRASES: dict[str, str] = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
SIZE_JITTER = 0.08  # relative, on the box side
POSITION_JITTER = 0.03  # absolute, in fractions of the image side
BACKGROUND = (0, 0, 0)
# Bump when rendering or captions change, so an old dataset on disk is regenerated.
FORMAT_VERSION = 1
PARAMS_FILE = "shapes.json"


@dataclass(frozen=True)
class ShapeSpec:
    """The four attributes that a shapes image and its captions share."""

    shape: str
    color: str
    size: str
    position: str


def all_combinations(colors: Sequence[str] = tuple(COLORS)) -> list[ShapeSpec]:
    """Every attribute combination of `colors` in a fixed order: 3 × 6 × 2 × 5 = 180 for the
    six standard colours."""
    return [
        ShapeSpec(shape, color, size, position)
        for shape in SHAPES
        for color in colors
        for size in SIZES
        for position in POSITIONS
    ]


def canonical_caption(spec: ShapeSpec) -> str:
    """The one phrasing used for evaluation prompts, e.g. "a large red circle on the left"."""
    return f"a {spec.size} {spec.color} {spec.shape} {POSITION_PHRASES[spec.position]}"


def captions_for(spec: ShapeSpec) -> list[str]:
    """Every phrasing of `spec`, canonical first; several so text models learn meaning, not word order."""
    thing = f"a {spec.size} {spec.color} {spec.shape}"
    where = POSITION_PHRASES[spec.position]
    return [
        f"{thing} {where}",
        f"there is {thing} {where}",
        f"{where}, {thing}",
        f"{thing} is {where}",
    ]


def _uniform(rng: random.Random | np.random.Generator, jitter: float) -> float:
    # random.Random and numpy's Generator both offer uniform(low, high).
    return float(rng.uniform(-jitter, jitter))


def render_shape(
    spec: ShapeSpec, image_size: int, rng: random.Random | np.random.Generator
) -> Image.Image:
    """Draw `spec` on a black square image, with the size and position jitter drawn from `rng`.

    The box is shifted inwards where a large shape near an edge would leave the image, so
    the whole shape is always visible (its centre then stays within the jitter range).
    """
    side = round(SIZES[spec.size] * (1 + _uniform(rng, SIZE_JITTER)) * image_size)
    fx, fy = POSITIONS[spec.position]
    cx = (fx + _uniform(rng, POSITION_JITTER)) * image_size
    cy = (fy + _uniform(rng, POSITION_JITTER)) * image_size
    x0 = min(max(round(cx - side / 2), 0), image_size - side)
    y0 = min(max(round(cy - side / 2), 0), image_size - side)
    x1, y1 = x0 + side - 1, y0 + side - 1  # PIL boxes include both ends

    image = Image.new("RGB", (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    color = PALETTE[spec.color]
    if spec.shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=color)
    elif spec.shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=color)
    elif spec.shape == "triangle":
        draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) / 2, y0)], fill=color)
    else:
        raise ValueError(f"unknown shape {spec.shape!r}; expected one of {SHAPES}")
    return image


def _write_split(
    folder: Path, split: str, count: int, first_id: int, image_size: int, seed: int, colors: Sequence[str], bar: tqdm
) -> None:
    combos = all_combinations(colors)
    split_key = 0 if split == "train" else 1
    (folder / f"{split}2017").mkdir(parents=True)
    images, annotations = [], []
    for i in range(count):
        spec = combos[i % len(combos)]
        image_id = first_id + i
        file_name = f"{image_id:012d}.png"
        rng = np.random.default_rng([seed, split_key, i])
        render_shape(spec, image_size, rng).save(folder / f"{split}2017" / file_name)
        images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "width": image_size,
                "height": image_size,
                "shape": asdict(spec),
            }
        )
        for caption in captions_for(spec):
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "caption": caption}
            )
        bar.update()
    coco = {
        "info": {"description": "multimodal built-in shapes dataset", "version": FORMAT_VERSION},
        "licenses": [],
        "images": images,
        "annotations": annotations,
    }
    with open(folder / "annotations" / f"captions_{split}2017.json", "w") as f:
        json.dump(coco, f)


def _read_params(root: Path) -> dict | None:
    try:
        return json.loads((root / PARAMS_FILE).read_text())
    except (OSError, ValueError):
        return None


def dataset_colors(root: str | os.PathLike) -> tuple[str, ...]:
    """The colours a shapes set under `root` was drawn in, as its shapes.json records them
    (the six standard ones when it names none)."""
    return parse_colors((_read_params(Path(root)) or {}).get("colors"))


def ensure_shapes_dataset(root: str | os.PathLike, image_size: int, seed: int = 0) -> None:
    """The shapes set at `image_size` under `root`: generated where the folder is missing or
    empty, drawn again (same counts and seed) where an earlier one has another image size.
    A folder of someone's own data is left alone."""
    root = Path(root)
    params = _read_params(root)
    if params is not None and params.get("image_size") != image_size:
        generate_shapes_dataset(
            root, params["num_train"], params["num_val"], image_size, params["seed"], params.get("colors")
        )
    elif not root.exists() or (root.is_dir() and not any(root.iterdir())):
        generate_shapes_dataset(root, image_size=image_size, seed=seed)


def parse_colors(colors: str | Sequence[str] | None) -> tuple[str, ...]:
    """The colours a set is drawn in: a comma-separated text or a list of names (None: the six
    standard colours). An unknown name is a ConfigError on the `colors` field."""
    if colors is None:
        return tuple(COLORS)
    names = [name.strip() for name in colors.split(",")] if isinstance(colors, str) else list(colors)
    for name in names:
        if name not in PALETTE:
            raise ConfigError("colors", f"has the unknown colour {name!r}; choose from {', '.join(PALETTE)}")
    if not names or len(set(names)) != len(names):
        raise ConfigError("colors", f"must name each colour once, got {colors!r}")
    return tuple(names)


def generate_shapes_dataset(
    root: str | os.PathLike,
    num_train: int = ShapesConfig.num_train,
    num_val: int = ShapesConfig.num_val,
    image_size: int = ShapesConfig.image_size,
    seed: int = ShapesConfig.seed,
    colors: str | Sequence[str] | None = None,
    progress: bool = True,
) -> Path:
    """Write the shapes dataset under `root` in COCO layout and return `root`.

    Returns at once when `root` already holds a complete dataset made with the same
    parameters. Otherwise builds it in a temporary sibling folder and renames that into
    place at the end, so an interrupted run never leaves a half dataset that looks complete.
    `<root>/shapes.json` records the parameters and is written last. The same parameters
    always give byte-identical files. `colors` (default: the six standard ones) are recorded
    only when they are others, so a standard set stays what it was.
    """
    root = Path(root)
    colors = parse_colors(colors)
    params = {
        "format_version": FORMAT_VERSION,
        "num_train": num_train,
        "num_val": num_val,
        "image_size": image_size,
        "seed": seed,
    } | ({} if colors == tuple(COLORS) else {"colors": list(colors)})
    if _read_params(root) == params:
        return root
    if root.exists() and not root.is_dir():
        raise ShapesFolderError(f"{root} is a file, not a folder for the shapes dataset; choose another folder")
    if root.exists() and any(root.iterdir()) and _read_params(root) is None:
        raise ShapesFolderError(
            f"{root} exists and is not a shapes dataset (no {PARAMS_FILE}); "
            "refusing to overwrite it, choose another folder"
        )

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "annotations").mkdir(parents=True)
    with tqdm(
        total=num_train + num_val, desc=f"shapes → {root}", unit="img", disable=not progress
    ) as bar:
        _write_split(tmp, "train", num_train, 1, image_size, seed, colors, bar)
        _write_split(tmp, "val", num_val, num_train + 1, image_size, seed, colors, bar)
    (tmp / PARAMS_FILE).write_text(json.dumps(params, indent=2) + "\n")

    # Move an old dataset (other parameters, or interrupted) aside, then swap the new one in.
    old = root.parent / f".{root.name}.old-{os.getpid()}"
    if root.exists():
        root.rename(old)
    try:
        tmp.rename(root)
    except OSError:
        # Another process (e.g. another rank) finished first: keep its identical result.
        shutil.rmtree(tmp, ignore_errors=True)
        if _read_params(root) != params:
            raise
    shutil.rmtree(old, ignore_errors=True)
    return root

