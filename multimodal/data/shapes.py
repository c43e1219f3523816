"""The built-in shapes dataset: one coloured shape on black, captioned by its attributes.

It exists so the whole pipeline (contrastive, captioning, text-to-image) can be trained and
checked in minutes without COCO: every caption is fully determined by the picture and vice
versa, so a working model must reach near-perfect retrieval and attribute accuracy.
It is written in COCO's layout so that one loader (`CocoCaptionDataset`) reads both.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from multimodal.config import ShapesConfig
from multimodal.data.synthetic import draw_builtin_set, read_params
from multimodal.errors import ConfigError


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


def jittered_box(
    side: float, centre: tuple[float, float], image_size: int, rng: random.Random | np.random.Generator
) -> tuple[int, int, int, int]:
    """The pixel box (x0, y0, x1, y1, both ends included) of a shape whose side (a fraction of
    the image side) and centre (fractions x, y) get the set's jitter from `rng`.

    The box is shifted inwards where a large shape near an edge would leave the image, so
    the whole shape is always visible (its centre then stays within the jitter range).
    """
    side_px = round(side * (1 + _uniform(rng, SIZE_JITTER)) * image_size)
    cx = (centre[0] + _uniform(rng, POSITION_JITTER)) * image_size
    cy = (centre[1] + _uniform(rng, POSITION_JITTER)) * image_size
    x0 = min(max(round(cx - side_px / 2), 0), image_size - side_px)
    y0 = min(max(round(cy - side_px / 2), 0), image_size - side_px)
    return x0, y0, x0 + side_px - 1, y0 + side_px - 1


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], color: str) -> None:
    """Fill `shape` (a circle, a square or an apex-up triangle) into `box` in the named colour."""
    x0, y0, x1, y1 = box
    fill = PALETTE[color]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) / 2, y0)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def render_shape(
    spec: ShapeSpec, image_size: int, rng: random.Random | np.random.Generator
) -> Image.Image:
    """Draw `spec` on a black square image, with the size and position jitter drawn from `rng`."""
    image = Image.new("RGB", (image_size, image_size), BACKGROUND)
    box = jittered_box(SIZES[spec.size], POSITIONS[spec.position], image_size, rng)
    draw_shape(ImageDraw.Draw(image), spec.shape, box, spec.color)
    return image


def is_heldout(spec: ShapeSpec) -> bool:
    """Whether `--holdout` keeps this combination out of training: those whose attribute
    indices (in the order of SHAPES, PALETTE, SIZES, POSITIONS) sum to a multiple of 5.

    That is one position for each shape, colour and size: 36 of the 180 combinations, a fifth.
    Every single value, and every pair of values, still appears in training (a pair of fixed
    values leaves at least four combinations, of which at most two are held out).
    """
    indices = (
        SHAPES.index(spec.shape), list(PALETTE).index(spec.color), list(SIZES).index(spec.size),
        list(POSITIONS).index(spec.position),
    )
    return sum(indices) % 5 == 0


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


def dataset_colors(root: str | os.PathLike) -> tuple[str, ...]:
    """The colours a shapes set under `root` was drawn in, as its shapes.json records them
    (the six standard ones when it names none)."""
    return parse_colors((read_params(Path(root), PARAMS_FILE) or {}).get("colors"))


def generate_shapes_dataset(
    root: str | os.PathLike,
    num_train: int = ShapesConfig.num_train,
    num_val: int = ShapesConfig.num_val,
    image_size: int = ShapesConfig.image_size,
    seed: int = ShapesConfig.seed,
    progress: bool = True,
    holdout: bool = False,
    colors: str | Sequence[str] | None = None,
) -> Path:
    """Write the shapes dataset under `root` in COCO layout and return `root`.

    The validation split cycles through every combination of `colors` (default: the six
    standard ones, 180 combinations); the training split too, or with `holdout` through those
    `is_heldout` leaves in (validation images then record whether training saw their
    combination, as "seen"). Returns at once when `root` already holds a complete dataset made
    with the same parameters (`<root>/shapes.json`; `colors` recorded only when they are not the
    standard ones, so a standard set stays what it was); the same parameters always give
    byte-identical files.
    """
    colors = parse_colors(colors)
    params = {
        "format_version": FORMAT_VERSION,
        "num_train": num_train,
        "num_val": num_val,
        "image_size": image_size,
        "seed": seed,
        "holdout": holdout,
    } | ({} if colors == tuple(COLORS) else {"colors": list(colors)})
    combinations = all_combinations(colors)
    train_specs = [spec for spec in combinations if not (holdout and is_heldout(spec))]

    return draw_builtin_set(
        root, "shapes", PARAMS_FILE, params, (train_specs, combinations),
        lambda spec, rng: render_shape(spec, image_size, rng),
        lambda spec: {"shape": asdict(spec)} | ({"seen": not is_heldout(spec)} if holdout else {}),
        captions_for, progress,
    )
