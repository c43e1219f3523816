"""Pictures of a trained run, for looking inside it (`visualize.py` draws them all).

Each function writes one PNG and returns its path: the loss curves of every stage (from
metrics.csv), validation images beside their reconstructions, the latent's per-channel
statistics, the denoising trajectory of one prompt, a 2-D map of the image and text embeddings,
and, where the run recorded them (a VQ latent), the codebook's usage and perplexity.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from multimodal.config import SamplingConfig
from multimodal.data.transforms import to_pil
from multimodal.models import GenerativeMultimodalModel
from multimodal.training.samples import pyplot

CODEBOOK_MARK = "codebook"  # metrics.csv columns with this in their name describe a VQ codebook
NOT_LOSSES = ("i2t", "t2i", "lr", "images_per_s", CODEBOOK_MARK)  # columns of metrics.csv that are not losses


def _save(figure: Any, path: Path) -> Path:
    """Write the figure beside `path` and rename it into place: never half a PNG."""
    plt = pyplot()
    figure.tight_layout()
    partial = path.with_name(f".{path.name}.partial")
    figure.savefig(partial, dpi=100, format="png")
    plt.close(figure)
    partial.replace(path)
    return path


def loss_curves(history: pd.DataFrame, path: Path) -> Path:
    """One panel per training stage: every loss it reports, training and validation, per epoch
    (each stage's losses are its own, so stages are not drawn on one axis)."""
    plt = pyplot()
    stages = list(dict.fromkeys(history["stage"])) if "stage" in history else ["joint"]
    figure, axes = plt.subplots(1, len(stages), figsize=(5.5 * len(stages), 4), squeeze=False)
    for axis, stage in zip(axes[0], stages):
        rows = history[history["stage"] == stage] if "stage" in history else history
        for column in rows.columns:
            is_loss = column.startswith(("train_", "val_")) and not any(mark in column for mark in NOT_LOSSES)
            if is_loss and rows[column].notna().any():
                style = "-" if column.startswith("train_") else "--"
                axis.plot(rows["epoch"], rows[column], style, marker="o", markersize=3, label=column)
        axis.set(xlabel="epoch", ylabel="loss", title=f"stage: {stage}")
        axis.legend(fontsize=7)
    return _save(figure, path)


def codebook_curves(history: pd.DataFrame, path: Path) -> Path | None:
    """The codebook's usage and perplexity per epoch, or None when the run has no codebook."""
    columns = [column for column in history.columns if CODEBOOK_MARK in column and history[column].notna().any()]
    if not columns:
        return None
    plt = pyplot()
    figure, axes = plt.subplots(1, len(columns), figsize=(5 * len(columns), 3.6), squeeze=False)
    for axis, column in zip(axes[0], columns):
        axis.plot(history["epoch"], history[column], marker="o", markersize=3)
        axis.set(xlabel="epoch", title=column)
    return _save(figure, path)


@torch.no_grad()
def reconstructions(model: GenerativeMultimodalModel, images: torch.Tensor, path: Path) -> Path:
    """Validation images (top row) above what the decoder draws from their latents (bottom)."""
    decoded = model.image_decoder.decode_from_latent(model.image_encoder.encode(images)).clamp(-1, 1)
    plt = pyplot()
    figure, axes = plt.subplots(2, len(images), figsize=(2 * len(images), 4.4), squeeze=False)
    for column, (original, drawn) in enumerate(zip(images, decoded)):
        for row, picture in enumerate((original, drawn)):
            axes[row][column].imshow(to_pil(picture.cpu()))
            axes[row][column].axis("off")
    axes[0][0].set_title("validation image", fontsize=8, loc="left")
    axes[1][0].set_title("reconstruction", fontsize=8, loc="left")
    return _save(figure, path)


@torch.no_grad()
def latent_statistics(model: GenerativeMultimodalModel, images: torch.Tensor, path: Path) -> Path:
    """Each latent channel's mean and standard deviation over validation images, beside the
    running statistics the diffusion model normalises with: channels far from them, or dead
    (std near 0), show here first."""
    z = model.image_encoder.encode(images).float()
    mean, std = z.mean(dim=(0, 2, 3)).cpu(), z.std(dim=(0, 2, 3)).cpu()
    channels = np.arange(len(mean))
    plt = pyplot()
    figure, (means, stds) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    means.bar(channels, mean.numpy(), width=1.0, label="validation images")
    means.plot(channels, model.diffusion.latent_mean.cpu().numpy(), "r.", markersize=3, label="running (diffusion)")
    means.set(ylabel="mean", title=f"latent z per channel ({len(images)} validation images)")
    means.legend(fontsize=7)
    stds.bar(channels, std.numpy(), width=1.0, label="validation images")
    stds.plot(channels, model.diffusion.latent_std.cpu().numpy(), "r.", markersize=3, label="running (diffusion)")
    stds.set(xlabel="channel", ylabel="standard deviation")
    stds.legend(fontsize=7)
    return _save(figure, path)


@torch.no_grad()
def denoising_trajectory(
    model: GenerativeMultimodalModel, prompt: str, sampling: SamplingConfig, frames: int, seed: int, path: Path
) -> Path:
    """The latent decoded after `frames` steps spread over the sampler's run, from noise to
    the picture, for one prompt."""
    latents: list[torch.Tensor] = []
    model.diffusion.sample(
        model.text_condition([prompt]), sampling, torch.Generator().manual_seed(seed), on_step=latents.append
    )
    steps = len(latents)
    shown = sorted({round(i * (steps - 1) / (frames - 1)) for i in range(frames)})
    decoded = model.image_decoder.decode_from_latent(torch.cat([latents[i] for i in shown])).clamp(-1, 1)
    plt = pyplot()
    figure, axes = plt.subplots(1, len(shown), figsize=(2 * len(shown), 2.6), squeeze=False)
    for axis, step, picture in zip(axes[0], shown, decoded):
        axis.imshow(to_pil(picture.cpu()))
        axis.set_title(f"step {step + 1}/{steps}", fontsize=8)
        axis.axis("off")
    figure.suptitle("\n".join(textwrap.wrap(f"{sampling.sampler}, guidance {sampling.guidance_scale:g}: {prompt}", 90)),
                    fontsize=9)
    return _save(figure, path)


def _layout(method: str, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    if method == "tsne":
        return lambda points: TSNE(2, perplexity=min(30.0, (len(points) - 1) / 3), random_state=seed).fit_transform(points)
    return PCA(2, random_state=seed).fit_transform


@torch.no_grad()
def embedding_map(
    model: GenerativeMultimodalModel, images: torch.Tensor, captions: list[str], method: str, seed: int, path: Path
) -> Path:
    """Validation images and their captions in the shared embedding space, laid out in 2-D
    together (PCA or t-SNE), each pair joined by a line: short lines mean aligned pairs."""
    image_embedding = model.encode_image(images).float().cpu()
    text_embedding = model.encode_text(captions).float().cpu()
    points = _layout(method, seed)(torch.cat([image_embedding, text_embedding]).numpy())
    image_points, text_points = points[: len(images)], points[len(images):]
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 6))
    for start, end in zip(image_points, text_points):
        axis.plot(*zip(start, end), color="0.8", linewidth=0.6, zorder=0)
    axis.scatter(*image_points.T, s=14, label="validation images")
    axis.scatter(*text_points.T, s=14, marker="^", label="their captions")
    axis.set(title=f"image and text embeddings ({method.upper()}, {len(images)} pairs)", xticks=[], yticks=[])
    axis.legend(fontsize=8)
    return _save(figure, path)
