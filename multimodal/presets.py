"""The named presets, one record each: everything `--preset NAME` means, in one place.

A preset is what a run starts from and what its checkpoints are judged and described by:
the model, training and sampling defaults (overrides of `ModelConfig`, `TrainConfig` and
`SamplingConfig` fields), the data folder it reads and, for a built-in set, how that set is
drawn and what its pictures show, the model card's words, and the targets evaluate.py checks.
Every reader (train.py's flags and `--help`, the trainer, generation, the model card,
evaluate.py) takes it from here, so adding a preset is one `register(Preset(...))`.

This module is plain data and imports nothing of the package: the configs read it, not the
other way round. Why each preset's values are what they are, and what they measured, is in
docs/TRAINING.md and docs/GENERALISATION.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class BuiltinSet:
    """A synthetic set the package draws itself on first use (multimodal/data/builtin.py)."""

    kind: str  # the drawing and the judge: "shapes" (one object) or "scenes" (two)
    contents: str  # what its pictures show: all a model trained on it can describe or draw
    options: Mapping[str, Any] = field(default_factory=dict)  # passed to the drawing; recorded in its params file


@dataclass(frozen=True)
class ModelCard:
    """What a checkpoint's model card (multimodal/model_card.py) says of its training data."""

    dataset: str  # the data-set name in the card's header
    described: str  # the data set in words
    prompt: str  # an example prompt of the set's own kind
    metrics: tuple[str, ...]  # what evaluate.py measures on it, for the card's header
    limitations: str


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str  # one line for --help
    data_dir: str  # where its data lives unless --data-dir says otherwise (relative to where train.py runs)
    card: ModelCard
    model: Mapping[str, Any] = field(default_factory=dict)  # ModelConfig fields
    training: Mapping[str, Any] = field(default_factory=dict)  # TrainConfig fields
    sampling: Mapping[str, Any] = field(default_factory=dict)  # SamplingConfig fields its checkpoints draw with
    builtin: BuiltinSet | None = None  # None: the user's own data (COCO's layout or another)
    targets: Mapping[str, float] = field(default_factory=dict)  # evaluate.py metric → lowest acceptable value


PRESETS: dict[str, Preset] = {}


def register(preset: Preset) -> Preset:
    """Add `preset` to the names `--preset` takes (a program may add its own)."""
    PRESETS[preset.name] = preset
    return preset


def names() -> tuple[str, ...]:
    return tuple(PRESETS)


def get(name: str) -> Preset:
    """The preset called `name`; a ValueError that lists the names for any other."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]


def find(name: str | None) -> Preset | None:
    """The preset a checkpoint records, or None where it records none (or one this version lacks)."""
    return PRESETS.get(name or "")


def of_builtin_set(kind: str, params: Mapping[str, Any]) -> Preset | None:
    """The preset whose built-in set of `kind` was drawn with `params` (its params file): every
    option the preset sets must be as recorded, and of several the one that sets the most wins."""
    matches = [
        preset for preset in PRESETS.values()
        if preset.builtin and preset.builtin.kind == kind
        and all(params.get(name) == value for name, value in preset.builtin.options.items())
    ]
    return max(matches, key=lambda preset: len(preset.builtin.options), default=None)


register(Preset(
    name="coco",
    summary="COCO 2017 captions at 224 px, on an ImageNet-trained EfficientNet-Lite0 trunk",
    data_dir="data/coco/coco2017",
    model=dict(image_encoder="efficientnet_lite0", freeze_image_trunk=True, embedding_pooling="mean"),
    card=ModelCard(
        dataset="coco", described="COCO 2017 captions", prompt="a dog running on the beach",
        metrics=("recall", "bleu", "cider"),
        limitations="A small model trained on about 118,000 captioned photos: pictures come from a 7×7 latent and "
        "are blurry, captions are short and generic, and it repeats the biases of COCO's photos and captions.",
    ),
))

SHAPES = register(Preset(
    name="shapes",
    summary="the built-in shapes set (one coloured shape on black, 56 px), drawn on first use: the demo",
    data_dir="data/shapes",
    model=dict(
        image_size=56, encoder_width=16, decoder_width=16, proj_hidden_dim=512, freeze_bert=True,
        max_text_length=24, max_caption_length=32, caption_width=128, caption_layers=2, caption_heads=4,
        unet_width=64, unet_blocks=1, prediction_type="sample",
    ),
    training=dict(
        epochs=2, diffusion_epochs=3, batch_size=32, learning_rate=1e-3, diffusion_learning_rate=3e-3,
        warmup_epochs=0.25, ema_decay=0.995, cache_images=True,
    ),
    builtin=BuiltinSet("shapes", "one coloured circle, square or triangle on black", {"holdout": False}),
    card=ModelCard(
        dataset="shapes",
        described="the built-in shapes set of 56×56 pictures of one coloured circle, square or triangle on black",
        prompt="a large red circle on the left", metrics=("recall", "accuracy"),
        limitations="It knows only the shapes set: given a photograph it still describes a coloured shape, and it "
        "draws nothing but one shape on black.",
    ),
    targets={
        "retrieval/i2t_R@1": 0.95, "retrieval/t2i_R@1": 0.95, "caption/all": 0.95, "t2i/color": 0.95,
        "t2i/shape": 0.90, "t2i/position": 0.90, "t2i/size": 0.90, "t2i/all": 0.80,
    },
))

register(dataclasses.replace(
    SHAPES,
    name="shapes-holdout",
    summary="the shapes set with a fifth of its combinations never in training (validation has them all)",
    data_dir="data/shapes-holdout",
    training=SHAPES.training | dict(diffusion_epochs=5),
    builtin=dataclasses.replace(SHAPES.builtin, options={"holdout": True}),
    card=dataclasses.replace(
        SHAPES.card, dataset="shapes-holdout",
        described="the built-in shapes set of 56×56 pictures of one coloured circle, square or triangle on black, "
        "a fifth of whose colour, shape, size and position combinations training never saw",
    ),
    targets={"seen/t2i/all": 0.95, "unseen/t2i/all": 0.80, "seen/caption/all": 0.95, "unseen/caption/all": 0.90},
))

register(dataclasses.replace(
    SHAPES,
    name="scenes",
    summary="two objects per picture (which colour is which shape, and where), some pairs never in training",
    data_dir="data/scenes",
    # A frozen MiniLM's mean pool barely tells a caption from its swap: a trainable layer reads
    # the tokens in context first (docs/GENERALISATION.md).
    model=SHAPES.model | dict(text_context_layers=1, caption_position_std=1.0),
    training=SHAPES.training | dict(epochs=4, diffusion_epochs=6, hard_negatives=True),
    sampling=dict(num_candidates=8),
    builtin=BuiltinSet("scenes", "two coloured circles, squares or triangles side by side on black"),
    card=ModelCard(
        dataset="scenes",
        described="the built-in scenes set of 56×56 pictures of two coloured circles, squares or triangles side by "
        "side on black, some of whose pairs training never saw together",
        prompt="a red circle on the left and a blue square on the right", metrics=("recall", "accuracy"),
        limitations="It knows only the scenes set: given a photograph it still describes two coloured shapes, and it "
        "draws nothing but two shapes on black. Its UNet alone often swaps or mistakes an object; by default it "
        "draws 8 pictures per image asked and keeps the one its caption decoder finds likeliest.",
    ),
    targets={
        "seen/t2i/both": 0.85, "unseen/t2i/both": 0.70, "seen/caption/both": 0.95, "unseen/caption/both": 0.80,
        "seen/retrieval_reranked/i2t_R@1": 0.90, "unseen/retrieval_reranked/i2t_R@1": 0.80,
        "seen/retrieval_reranked/t2i_R@1": 0.90, "unseen/retrieval_reranked/t2i_R@1": 0.80,
    },
))
