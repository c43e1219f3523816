"""Pictures of what a trained model computes, for looking inside a run (`visualize.py` draws
them, beside the curves of its metrics.csv that `multimodal.plots` draws).

Each function writes one PNG (atomically, through `plots.save_figure`) and returns its path:
validation images beside their reconstructions, the latent's per-channel statistics, the
denoising trajectory of one prompt and a 2-D map of the image and text embeddings.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from multimodal.config import SamplingConfig
from multimodal.data.transforms import to_pil
from multimodal.models import GenerativeMultimodalModel
from multimodal.plots import pyplot, save_figure


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
    return save_figure(figure, path)


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
    return save_figure(figure, path)


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
    return save_figure(figure, path)


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
    return save_figure(figure, path)
