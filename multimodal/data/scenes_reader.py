"""Reading the scenes set back: which two objects a picture shows and where, and what a caption
says. The inverse of `scenes.py`, made to judge generated output without a learned model."""

from __future__ import annotations

import numpy as np
from PIL import Image

from multimodal.data.scenes import SceneObject, SceneSpec
from multimodal.data.shapes import COLORS, SHAPES
from multimodal.data.shapes_reader import find_objects
from multimodal.metrics import words


def read_scene(image: Image.Image | np.ndarray) -> SceneSpec | None:
    """The two largest objects of a scenes picture, ordered left to right when they lie side by
    side (their centres differ more in x than in y), else top to bottom; None when fewer than
    two objects stand out."""
    found = find_objects(image, count=2)
    if found is None:
        return None
    centres = [((left + right) / 2, (top + bottom) / 2) for left, top, right, bottom in (t["box"] for t in found)]
    dx, dy = centres[1][0] - centres[0][0], centres[1][1] - centres[0][1]
    arrangement, axis = ("horizontal", 0) if abs(dx) >= abs(dy) else ("vertical", 1)
    first, second = sorted(zip(centres, found), key=lambda pair: pair[0][axis])
    return SceneSpec(
        SceneObject(first[1]["shape"], first[1]["color"]), SceneObject(second[1]["shape"], second[1]["color"]),
        arrangement,
    )


# Relation words, by whether they put the object named just before them first (left or top) and
# by the arrangement they imply.
_RELATIONS = {
    "left": (True, "horizontal"), "right": (False, "horizontal"),
    "top": (True, "vertical"), "above": (True, "vertical"),
    "bottom": (False, "vertical"), "below": (False, "vertical"),
}


def parse_scene_caption(caption: str) -> SceneSpec | None:
    """The two objects and their arrangement a caption names, in any of the set's four forms.

    Exactly two "<colour> <shape>" mentions are needed; the first relation word after the first
    mention places it ("a blue square to the right of a red circle": the square is second), and
    every later relation word must agree. Anything else is None: a caption that has not
    committed to one scene must not be scored as right.
    """
    tokens = words(caption)
    mentions = [
        (i, SceneObject(tokens[i + 1], tokens[i]))
        for i in range(len(tokens) - 1)
        if tokens[i] in COLORS and tokens[i + 1] in SHAPES
    ]
    named = [token for token in tokens if token in COLORS or token in SHAPES]
    if len(mentions) != 2 or len(named) != 4:
        return None
    (start, one), (second_start, other) = mentions
    relations = [(i, _RELATIONS[token]) for i, token in enumerate(tokens) if token in _RELATIONS]
    if not relations or relations[0][0] < start:
        return None
    # A relation word after the second mention speaks of it: flip its meaning for the first.
    placements = {(first if i < second_start else not first, arrangement) for i, (first, arrangement) in relations}
    if len(placements) != 1:
        return None
    one_is_first, arrangement = placements.pop()
    first, second = (one, other) if one_is_first else (other, one)
    return SceneSpec(first, second, arrangement)
