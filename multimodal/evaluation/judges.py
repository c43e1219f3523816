"""How the built-in sets are judged without a learned judge: the pixel readers of
`data/shapes_reader.py` and `data/scenes_reader.py` name what a generated picture shows, their
caption parsers what a generated caption says, and each set's score compares those with what
was asked for."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from multimodal.data import scenes
from multimodal.data.scenes_reader import parse_scene_caption, read_scene
from multimodal.data.shapes import ShapeSpec, all_combinations, canonical_caption, is_heldout
from multimodal.data.shapes_reader import parse_caption_attributes, read_shape_attributes
from multimodal.metrics import attribute_accuracy

if TYPE_CHECKING:
    from multimodal.data.coco import CocoCaptionDataset


def builtin_dataset_kind(dataset: CocoCaptionDataset) -> str | None:
    """"shapes" or "scenes" for a built-in set (every image records what it shows under that
    name), None for anything else."""
    infos = list(dataset.image_info.values())
    for kind, key in (("shapes", "shape"), ("scenes", "scene")):
        if infos and all(key in info for info in infos):
            return kind
    return None


def has_heldout(dataset: CocoCaptionDataset) -> bool:
    """Whether the set holds validation images of kinds training never saw (each image says)."""
    infos = list(dataset.image_info.values())
    return bool(infos) and all("seen" in info for info in infos)


def score_shape_images(
    images: Sequence[Image.Image | np.ndarray], specs: Sequence[ShapeSpec]
) -> dict[str, float]:
    """Attribute accuracy of pictures drawn for `specs`, as the pixel reader sees them."""
    predicted = [read_shape_attributes(image) for image in images]
    return attribute_accuracy(predicted, [asdict(spec) for spec in specs])


def scene_accuracy(predicted: list[scenes.SceneSpec | None], truth: list[scenes.SceneSpec]) -> dict[str, float]:
    """How often both objects are right (colour, shape and place: "both"), the first and the
    second object alone, and the arrangement. None (nothing read) is wrong on each."""
    right = np.array([
        [p is not None and getattr(p, part) == getattr(t, part) for part in ("first", "second", "arrangement")]
        for p, t in zip(predicted, truth)
    ])
    return {"both": float(right.all(axis=1).mean()), "first": float(right[:, 0].mean()),
            "second": float(right[:, 1].mean()), "arrangement": float(right[:, 2].mean())}


@dataclass(frozen=True)
class BuiltinJudge:
    """What measuring a model on a built-in set needs, without a learned judge."""

    kinds: list  # every kind of picture (combination, layout), in the order of the canonical captions
    caption: Callable[[Any], str]  # a kind's canonical caption
    truth: Callable[[dict], Any]  # a validation image's entry → its kind
    read: Callable[[Image.Image], Any]  # a picture → what it shows (None: nothing)
    parse: Callable[[str], Any]  # a caption → what it says (None: nothing definite)
    score: Callable[[list, list], dict[str, float]]  # (read or parsed, kinds) → accuracies
    heldout: Callable[[Any], bool]  # whether training never saw a kind


def shapes_judge(colors: Sequence[str]) -> BuiltinJudge:
    """The shapes set drawn in `colors`: every combination of shape, colour, size and position."""
    return BuiltinJudge(
        kinds=all_combinations(colors), caption=canonical_caption, truth=lambda info: ShapeSpec(**info["shape"]),
        read=read_shape_attributes, parse=parse_caption_attributes,
        score=lambda found, kinds: attribute_accuracy(found, [asdict(kind) for kind in kinds]), heldout=is_heldout,
    )


def scenes_judge() -> BuiltinJudge:
    """The scenes set: every layout of two objects."""
    heldout = scenes.heldout_pairs()
    return BuiltinJudge(
        kinds=scenes.all_layouts(), caption=scenes.canonical_caption,
        truth=lambda info: scenes.SceneSpec.from_dict(info["scene"]), read=read_scene, parse=parse_scene_caption,
        score=scene_accuracy, heldout=lambda spec: scenes.is_heldout(spec, heldout),
    )
