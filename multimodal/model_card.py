"""The model card: a README.md in the Hugging Face format beside every checkpoint's weights.

    ---                                 YAML header the Hub reads: library, tags, data set, metrics
    # <what the model is>               its parts and sizes, from config.json
    ## Training                         preset, steps, epochs, data, from trainer_state.json
    ## How to use                       three lines of Python
    ## Evaluation                       the table evaluate.py measured (once it has run)
    ## Limitations

The card is built from the folder's own files, so `save_pretrained`, the trainer and
evaluate.py each rewrite it whole with what they know, and it never disagrees with them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from multimodal import presets
from multimodal.config import ModelConfig, SamplingConfig
from multimodal.presets import ModelCard
from multimodal.files import write_text_atomically
from multimodal.paths import CONFIG_NAME
from multimodal.provenance import read_trainer_state

CARD_NAME = "README.md"

# A checkpoint whose trainer recorded no preset (or one this version does not know).
UNKNOWN = ModelCard(
    dataset="unknown", described="a data set this checkpoint does not record", prompt="a photo of a dog",
    metrics=("recall",), limitations="Unknown training data: test it on yours before use.",
)


def build_model_card(config: dict[str, Any], trainer_state: dict[str, Any] | None = None,
                     evaluation: dict[str, Any] | None = None) -> str:
    """The card's text from a model config (config.json), the trainer's record
    (trainer_state.json, None for a plain save_pretrained) and evaluate.py's results."""
    train_config = (trainer_state or {}).get("train_config") or {}
    preset = train_config.get("preset")
    card = getattr(presets.find(preset), "card", UNKNOWN)
    unconditional = ModelConfig.from_dict(config).unconditional
    tags = (("unconditional-image-generation", "latent-diffusion") if unconditional
            else ("text-to-image", "image-to-text", "image-captioning", "latent-diffusion", "clip"))
    header = ["---", "library_name: multimodal", f"pipeline_tag: {tags[0]}", "tags:"] + [f"- {tag}" for tag in tags]
    header += ["datasets:", f"- {card.dataset}", "metrics:"] + [f"- {m}" for m in card.metrics] + ["---"]

    size = config["image_size"]
    lines = header + [
        "",
        "# multimodal: one image–text space, generation in both directions",
        "",
        f"A CNN image encoder ({config.get('image_encoder', 'simple_cnn')}) and a BERT text encoder ({config['bert_config'].get('num_hidden_layers', '?')} layers) "
        f"aligned by a CLIP-style contrastive loss in a {config['embed_dim']}-d space; a transposed-CNN decoder "
        f"draws {size}×{size} images from the shared {config['latent_channels']}×{config['latent_size']}×"
        f"{config['latent_size']} latent, a {config['caption_layers']}-layer Transformer writes captions from it, and "
        f"a latent-diffusion UNet (width {config['unet_width']}) turns text into that latent.",
        *(["", "**Unconditional**: trained on images alone, it draws pictures of no prompt. Its text encoder's "
            "head, caption decoder and text condition never learned, so it takes no prompt and writes no caption."]
          if unconditional else []),
        "",
        "## Training",
        "",
    ]
    if trainer_state:
        history = trainer_state.get("history") or []
        last = history[-1] if history else {}
        lines.append(
            f"Preset `{preset}`, on {card.described}, read from `{train_config.get('data_dir')}`: {trainer_state.get('step')} "
            f"optimiser steps, {trainer_state.get('epoch')} epochs ({train_config.get('epochs')} of every part"
            + (f", then {train_config['diffusion_epochs']} of diffusion alone" if train_config.get("diffusion_epochs") else "")
            + f"), batch {train_config.get('batch_size')}, peak learning rate {train_config.get('learning_rate')}, "
            "EMA weights."
        )
        if "val_loss" in last:
            retrieval = (f", retrieval R@1 image→text {last['val_i2t_R@1']:.3f}, text→image {last['val_t2i_R@1']:.3f}"
                         if "val_i2t_R@1" in last else "")  # an unconditional model retrieves nothing
            lines.append(f"Last epoch: validation loss {last['val_loss']:.4f}{retrieval}.")
    else:
        lines.append("Written by `save_pretrained` without a trainer: how it was trained is not recorded.")
    lines += [
        "",
        "## How to use",
        "",
        "```python",
        "from multimodal import ImageTextGenerator",
        'generator = ImageTextGenerator("path/to/this-folder")',
        'pictures = generator.generate_unconditional(4, seed=0)' if unconditional
        else f'caption = generator.image_to_text(generator.text_to_image("{card.prompt}", seed=0))',
        "```",
        "",
    ]
    if evaluation:
        lines += ["## Evaluation", "", _evaluation_text(evaluation), ""]
    lines += ["## Limitations", "", card.limitations, ""]
    return "\n".join(lines)


def _evaluation_text(evaluation: dict[str, Any]) -> str:
    settings = evaluation.get("settings") or {}
    limit = settings.get("limit")
    scope = f"the first {limit} validation images (a quick look)" if limit else "the whole validation split"
    rows = ["| metric | value | goal |", "|---|---|---|"]
    targets = evaluation.get("targets") or {}
    for name, value in (evaluation.get("metrics") or {}).items():
        if name.startswith("seconds/"):
            continue
        goal = f"≥ {targets[name]['goal']}" + ("" if targets[name]["met"] else " (missed)") if name in targets else ""
        rows.append(f"| {name} | {value:.4f} | {goal} |" if isinstance(value, float) else f"| {name} | {value} | {goal} |")
    sampling = settings.get("sampling")
    drawn = f" Text→image: {SamplingConfig.from_dict(sampling).describe()}." if sampling else ""
    return (f"Measured by `evaluate.py` on {scope} of `{evaluation.get('data_dir')}` ({settings.get('device')}).{drawn}"
            "\n\n" + "\n".join(rows))


def write_model_card(directory: str | os.PathLike, evaluation: dict[str, Any] | None = None) -> Path:
    """(Re)write `<directory>/README.md` from its config.json, its trainer_state.json when there
    is one, and `evaluation` (evaluate.py's results) when given."""
    directory = Path(directory)
    config = json.loads((directory / CONFIG_NAME).read_text())
    return write_text_atomically(directory / CARD_NAME, build_model_card(config, read_trainer_state(directory), evaluation))
