"""The built-in scenes set: two shapes of two colours side by side, captioned by both and
where each is.

One shape per picture can be drawn from memory; two test binding, which text-to-image models
are known to get wrong: which colour belongs to which shape, and which side each goes on. A
documented set of object pairs never appears together in training, so the validation split
also measures combinations the model never saw. Shapes and colours are the shapes set's.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from multimodal.data.shapes import BACKGROUND, COLORS, SHAPES, draw_shape, jittered_box
from multimodal.data.synthetic import draw_builtin_set

OBJECT_SIDE = 0.32  # side of each object's bounding box, as a fraction of the image side
# Box centres (x, y), as fractions of the image side, of the first and second object.
PLACES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "horizontal": ((0.27, 0.5), (0.73, 0.5)),
    "vertical": ((0.5, 0.27), (0.5, 0.73)),
}
# Where each object of an arrangement is: the first is left or on top.
PLACE_NAMES: dict[str, tuple[str, str]] = {"horizontal": ("left", "right"), "vertical": ("top", "bottom")}
HELDOUT_PAIRS = 20  # of the 135 unordered pairs of objects of different colours, about 15%
FORMAT_VERSION = 1
PARAMS_FILE = "scenes.json"


@dataclass(frozen=True)
class SceneObject:
    shape: str
    color: str

    def __str__(self) -> str:
        return f"{self.color} {self.shape}"


@dataclass(frozen=True)
class SceneSpec:
    """Two objects of different colours; `first` is on the left (horizontal) or at the top (vertical)."""

    first: SceneObject
    second: SceneObject
    arrangement: str

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> SceneSpec:
        return cls(SceneObject(**values["first"]), SceneObject(**values["second"]), values["arrangement"])


OBJECTS = [SceneObject(shape, color) for shape in SHAPES for color in COLORS]


def all_layouts() -> list[SceneSpec]:
    """All 540 layouts in a fixed order: 270 ordered pairs of objects of different colours × 2
    arrangements."""
    return [
        SceneSpec(first, second, arrangement)
        for arrangement in PLACES
        for first, second in itertools.permutations(OBJECTS, 2)
        if first.color != second.color
    ]


def _pair_key(a: SceneObject, b: SceneObject) -> frozenset[SceneObject]:
    return frozenset((a, b))


def heldout_pairs() -> set[frozenset[SceneObject]]:
    """The unordered object pairs never shown together in training: the HELDOUT_PAIRS pairs whose
    SHA-256 of "colour shape|colour shape" (the two objects in OBJECTS order) is smallest.

    A hash spreads them over colours and shapes without a pattern a model could learn; every
    object still appears with at least 11 of its 15 partners (a test checks)."""
    pairs = [(a, b) for a, b in itertools.combinations(OBJECTS, 2) if a.color != b.color]
    ranked = sorted(pairs, key=lambda pair: hashlib.sha256(f"{pair[0]}|{pair[1]}".encode()).hexdigest())
    return {_pair_key(a, b) for a, b in ranked[:HELDOUT_PAIRS]}


def is_heldout(spec: SceneSpec, heldout: set[frozenset[SceneObject]] | None = None) -> bool:
    """Whether training never shows this layout's two objects together."""
    return _pair_key(spec.first, spec.second) in (heldout if heldout is not None else heldout_pairs())


def captions_for(spec: SceneSpec) -> list[str]:
    """The four phrasings of a layout, canonical first ("a red circle on the left and a blue
    square on the right"); the other objects' order and the relation words vary."""
    a, b = spec.first, spec.second
    if spec.arrangement == "horizontal":
        return [
            f"a {a} on the left and a {b} on the right",
            f"a {b} on the right and a {a} on the left",
            f"a {a} to the left of a {b}",
            f"a {b} to the right of a {a}",
        ]
    return [
        f"a {a} at the top and a {b} at the bottom",
        f"a {b} at the bottom and a {a} at the top",
        f"a {a} above a {b}",
        f"a {b} below a {a}",
    ]


def canonical_caption(spec: SceneSpec) -> str:
    """The one phrasing used for evaluation prompts and retrieval."""
    return captions_for(spec)[0]


def render_scene(spec: SceneSpec, image_size: int, rng: np.random.Generator) -> Image.Image:
    """Draw both objects on black, each box of side OBJECT_SIDE (±8%) at its place (±0.03).

    The places are 0.46 of the side apart and a box is at most 0.35 wide, so objects never
    overlap, whatever the jitter."""
    image = Image.new("RGB", (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for thing, centre in zip((spec.first, spec.second), PLACES[spec.arrangement]):
        draw_shape(draw, thing.shape, jittered_box(OBJECT_SIDE, centre, image_size, rng), thing.color)
    return image


def generate_scenes_dataset(
    root: str | os.PathLike,
    num_train: int = 10_000,
    num_val: int = 1_000,
    image_size: int = 56,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Write the scenes set under `root` in COCO layout and return `root`: the training split
    cycles through the 460 layouts whose pair is not held out, the validation split through all
    540 (each image records its layout as "scene" and whether training saw its pair, "seen").
    Returns at once when `root` already holds the set these parameters make."""
    params = {"format_version": FORMAT_VERSION, "num_train": num_train, "num_val": num_val,
              "image_size": image_size, "seed": seed}
    layouts = all_layouts()
    heldout = heldout_pairs()
    train_layouts = [spec for spec in layouts if not is_heldout(spec, heldout)]

    return draw_builtin_set(
        root, "scenes", PARAMS_FILE, params, (train_layouts, layouts),
        lambda spec, rng: render_scene(spec, image_size, rng),
        lambda spec: {"scene": spec.as_dict(), "seen": not is_heldout(spec, heldout)}, captions_for, progress,
    )
