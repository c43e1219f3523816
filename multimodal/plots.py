"""Every picture drawn with matplotlib goes through here: its setup (files only, never a window),
saving a figure atomically, the curves of a run's metrics.csv and the layout of a sample sheet.

What the pictures show comes from elsewhere: `multimodal.training.samples` generates a sample
sheet's images and captions, `multimodal.visualization` draws what a model computes
(reconstructions, the latent, a denoising trajectory, the embedding map).
"""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from multimodal.files import file_written_in_place

if TYPE_CHECKING:
    import pandas as pd
    from PIL import Image

CODEBOOK_MARK = "codebook"  # metrics.csv columns with this in their name describe a VQ codebook
NOT_LOSSES = ("i2t", "t2i", "lr", "images_per_s", CODEBOOK_MARK)  # columns of metrics.csv that are not losses


def pyplot() -> Any:
    """matplotlib, drawing to files only (never a window); imported on first use (a second)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure: Any, path: Path) -> Path:
    """Lay `figure` out, write it as a PNG beside `path` and rename it into place (as
    `files.write_text_atomically` does text): a reader, or a crash, never leaves half a PNG."""
    plt = pyplot()
    figure.tight_layout()
    try:
        with file_written_in_place(path) as temporary:
            figure.savefig(temporary, dpi=100, format="png")
    finally:
        plt.close(figure)
    return path


def _by_stage(history: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Each training stage's rows of metrics.csv, in the order the stages ran ("joint": all
    rows, for a run that recorded no stages)."""
    if "stage" not in history:
        return [("joint", history)]
    return [(stage, history[history["stage"] == stage]) for stage in dict.fromkeys(history["stage"])]


def training_curves(history: pd.DataFrame, path: Path) -> Path:
    """The run's curves.png, redrawn after every epoch: loss (train and validation) and
    retrieval accuracy per epoch. Each training stage has lines of its own: its loss is the sum
    of the losses it trains, not comparable across stages."""
    plt = pyplot()
    figure, (losses, accuracy) = plt.subplots(1, 2, figsize=(11, 4))
    for stage, rows in _by_stage(history):
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
    return save_figure(figure, path)


def loss_curves(history: pd.DataFrame, path: Path) -> Path:
    """One panel per training stage: every loss it reports, training and validation, per epoch
    (each stage's losses are its own, so stages are not drawn on one axis)."""
    plt = pyplot()
    stages = _by_stage(history)
    figure, axes = plt.subplots(1, len(stages), figsize=(5.5 * len(stages), 4), squeeze=False)
    for axis, (stage, rows) in zip(axes[0], stages):
        for column in rows.columns:
            is_loss = column.startswith(("train_", "val_")) and not any(mark in column for mark in NOT_LOSSES)
            if is_loss and rows[column].notna().any():
                style = "-" if column.startswith("train_") else "--"
                axis.plot(rows["epoch"], rows[column], style, marker="o", markersize=3, label=column)
        axis.set(xlabel="epoch", ylabel="loss", title=f"stage: {stage}")
        axis.legend(fontsize=7)
    return save_figure(figure, path)


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
    return save_figure(figure, path)


def sample_sheet(
    generated: list[Image.Image], prompts: list[str], images: list[Image.Image], captions: list[str], path: Path,
    row_names: tuple[str, str] = ("text → image", "image → text"),
) -> Path:
    """Top row: the pictures `generated` for `prompts`. Bottom row: `images` under their
    generated `captions`. Each row named at its left by `row_names`. The folder of `path` is
    made if it is not there."""
    columns = max(len(prompts), len(images))
    plt = pyplot()
    figure, axes = plt.subplots(2, columns, figsize=(2.2 * columns, 5.2), squeeze=False)
    rows = [(generated, prompts), (images, captions)]
    for row, (pictures, texts) in enumerate(rows):
        for column in range(columns):
            axis = axes[row][column]
            axis.axis("off")
            if column < len(pictures):
                axis.imshow(pictures[column])
                axis.set_title("\n".join(textwrap.wrap(texts[column], 22)), fontsize=8)
    for row, name in enumerate(row_names):
        axes[row][0].text(-0.1, 0.5, name, transform=axes[row][0].transAxes, rotation=90, va="center", ha="right")
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # an untrained decoder writes any of BERT's words, CJK too: a box is drawn
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font")
        return save_figure(figure, path)
