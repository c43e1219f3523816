"""Pictures of a run: the loss curves and a sheet of samples in both directions."""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

from typing import Any

import pandas as pd
import torch

from multimodal.config import SamplingConfig
from multimodal.data.transforms import to_pil
from multimodal.models import GenerativeMultimodalModel

# Sample sheets during training: a quick look, 20 DDIM steps.
PREVIEW = SamplingConfig(num_inference_steps=20)


def pyplot() -> Any:
    """matplotlib, drawing to files only (never a window); imported on first use (a second)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_curves(history: pd.DataFrame, path: Path) -> None:
    """Loss (train and validation) and retrieval accuracy per epoch. Each training stage has
    lines of its own: its loss is the sum of the losses it trains, not comparable across stages."""
    plt = pyplot()
    figure, (losses, accuracy) = plt.subplots(1, 2, figsize=(11, 4))
    stages = history["stage"] if "stage" in history else pd.Series(["joint"] * len(history))
    for stage in dict.fromkeys(stages):
        rows = history[stages.values == stage]
        for column, label in [("train_loss", "train"), ("val_loss", "validation")]:
            if column in rows:
                losses.plot(rows["epoch"], rows[column], marker="o", label=f"{stage}: {label}")
    losses.set(xlabel="epoch", ylabel="loss of the stage", title="loss")
    losses.legend()
    for column in ["train_i2t", "train_t2i", "val_i2t_R@1", "val_t2i_R@1"]:
        if column in history:
            accuracy.plot(history["epoch"], history[column], marker="o", label=column)
    accuracy.set(xlabel="epoch", ylabel="accuracy / recall", title="contrastive", ylim=(0, 1.02))
    if accuracy.lines:  # the autoencoder stage has no retrieval to plot
        accuracy.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


@torch.no_grad()
def write_sample_sheet(
    model: GenerativeMultimodalModel,
    prompts: list[str],
    images: torch.Tensor,
    path: Path,
    sampling: SamplingConfig = PREVIEW,
    seed: int = 0,
) -> list[str]:
    """Top row: images generated for `prompts` (noise from `seed`). Bottom row: `images` with
    their generated captions. Returns those captions."""
    model.eval()
    generated = model.generate_image_from_text(prompts, sampling, torch.Generator().manual_seed(seed))
    captions = model.generate_text_from_image(images)
    columns = max(len(prompts), len(images))
    plt = pyplot()
    figure, axes = plt.subplots(2, columns, figsize=(2.2 * columns, 5.2), squeeze=False)
    rows = [(generated, prompts), (images, captions)]
    for row, (pictures, texts) in enumerate(rows):
        for column in range(columns):
            axis = axes[row][column]
            axis.axis("off")
            if column < len(pictures):
                axis.imshow(to_pil(pictures[column].cpu()))
                axis.set_title("\n".join(textwrap.wrap(texts[column], 22)), fontsize=8)
    axes[0][0].text(-0.1, 0.5, "text → image", transform=axes[0][0].transAxes, rotation=90, va="center", ha="right")
    axes[1][0].text(-0.1, 0.5, "image → text", transform=axes[1][0].transAxes, rotation=90, va="center", ha="right")
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # an untrained decoder writes any of BERT's words, CJK too: a box is drawn
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font")
        figure.tight_layout()
        figure.savefig(path, dpi=100)
    plt.close(figure)
    return captions
