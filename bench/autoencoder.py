"""The autoencoder stage on real photographs: none / kl / vq × (L1, + perceptual, + adversarial).

    python -m bench.autoencoder                         # coco-mini, 112 px, docs/autoencoder_sheet.png
    python -m bench.autoencoder --steps 20 --rows none:l1,vq:adversarial   # a quick look

Each row trains the autoencoder stage alone (`train.py --autoencoder-epochs`, cut at `--steps`
optimiser steps: the same budget for every row) on coco-mini's 80 training photographs, and
judges its EMA weights on the 79 validation photographs: PSNR and SSIM against the originals,
and the sharpness ratio, the energy of the Laplacian of the reconstructions over that of the
originals (1: as much fine detail as the photographs; an L1-trained decoder blurs, < 1). The
sheet shows validation photographs, the L1 row's reconstructions and the chosen row's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import laplace
from skimage.metrics import structural_similarity

from bench.data import COCO_MINI
from multimodal.config import TrainConfig, model_preset
from multimodal.data import open_split
from multimodal.plots import pyplot, save_figure
from multimodal.training import Trainer

IMAGE_SIZE = 112
WIDTH = 16  # of the encoder, decoder and discriminator: a quarter of the coco preset's, so a CPU row takes minutes
BATCH = 8
LOSSES = {  # (perceptual weight, adversarial weight) of each kind of row
    "l1": (0.0, 0.0),
    "perceptual": (1.0, 0.0),
    "adversarial": (1.0, 0.5),
}
ROWS = [f"{regularizer}:{losses}" for regularizer in ("none", "kl", "vq") for losses in LOSSES]
SHEET = Path(__file__).resolve().parents[1] / "docs" / "autoencoder_sheet.png"


def train_row(row: str, data_dir: Path, steps: int, output_dir: Path) -> torch.nn.Module:
    """The autoencoder stage of one row, `steps` steps; returns its EMA model."""
    regularizer, losses = row.split(":")
    perceptual, adversarial = LOSSES[losses]
    model_config = model_preset(
        "coco", image_size=IMAGE_SIZE, image_encoder="simple_cnn", embedding_pooling="flatten",
        latent_regularizer=regularizer, freeze_bert=True, encoder_width=WIDTH,
        decoder_width=WIDTH, caption_width=64, caption_layers=1, unet_width=32, unet_blocks=1,  # not trained here
    )
    train_config = TrainConfig(
        data_dir=str(data_dir), output_dir=str(output_dir), autoencoder_epochs=10_000, max_steps=steps,
        batch_size=BATCH, autoencoder_learning_rate=1e-3, discriminator_width=WIDTH, perceptual_weight=perceptual,
        adversarial_weight=adversarial, discriminator_start=steps // 2, cache_images=True, num_workers=0, sample_every_epoch=False,
        save_every=10**9, precision="fp32",
    )
    torch.manual_seed(0)
    trainer = Trainer(model_config, train_config)
    trainer._end_epoch = lambda epoch, speed: None  # validation and checkpoints: not what this measures
    trainer.run()
    return trainer.ema.module.eval()


def sharpness(images: np.ndarray) -> float:
    """The mean squared Laplacian of the grey images (N, H, W, 3 in [0, 1])."""
    grey = images.mean(axis=-1)
    return float(np.mean([np.mean(laplace(image) ** 2) for image in grey]))


@torch.no_grad()
def judge(model: torch.nn.Module, originals: torch.Tensor) -> tuple[dict[str, float], np.ndarray]:
    """PSNR, SSIM, the sharpness ratio (and VQ's codebook usage) over `originals` in [-1, 1]."""
    decoded = torch.cat([model.image_decoder(model.image_encoder.encode(b)) for b in originals.split(16)]).clamp(-1, 1)
    to_numpy = lambda x: ((x.permute(0, 2, 3, 1).numpy() + 1) / 2).astype(np.float64)  # noqa: E731
    truth, drawn = to_numpy(originals), to_numpy(decoded)
    mse = ((truth - drawn) ** 2).reshape(len(truth), -1).mean(axis=1)
    result = {
        "psnr": float(np.mean(10 * np.log10(1 / np.maximum(mse, 1e-10)))),
        "ssim": float(np.mean([structural_similarity(t, d, channel_axis=-1, data_range=1.0)
                               for t, d in zip(truth, drawn)])),
        "sharpness": sharpness(drawn) / sharpness(truth),
    }
    if model.config.latent_regularizer == "vq":
        features = torch.cat([model.image_encoder.backbone(b) for b in originals.split(16)])
        codes = model.image_encoder.regularizer.quantizer(features)[2][2]
        result["codebook_usage"] = codes.unique().numel() / model.config.codebook_size
    return result, drawn


def write_sheet(originals: np.ndarray, rows: dict[str, np.ndarray], path: Path, count: int = 8) -> None:
    plt = pyplot()
    figure, axes = plt.subplots(1 + len(rows), count, figsize=(1.6 * count, 1.7 * (1 + len(rows))))
    for r, (label, images) in enumerate({"originals": originals, **rows}.items()):
        for c in range(count):
            axes[r, c].imshow(images[c])
            axes[r, c].axis("off")
        axes[r, 0].set_title(label, loc="left", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(figure, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=COCO_MINI, help="a COCO-layout folder (default: coco-mini)")
    parser.add_argument("--steps", type=int, default=60, help=f"optimiser steps of batch {BATCH} per row (default: 60)")
    parser.add_argument("--rows", default=",".join(ROWS), help="regularizer:losses rows (default: all nine)")
    parser.add_argument("--sheet", type=Path, default=SHEET, help=f"where the sheet goes (default: {SHEET})")
    args = parser.parse_args(argv)
    val = open_split(args.data_dir, "val", IMAGE_SIZE)
    originals = torch.stack([val[i]["image"] for i in range(len(val))])
    results, drawn = {}, {}
    print("| regulariser | losses | PSNR (dB) | SSIM | sharpness ratio | codebook usage | minutes |")
    print("|---|---|---|---|---|---|---|")
    for row in args.rows.split(","):
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as output:
            model = train_row(row, args.data_dir, args.steps, Path(output))
        results[row], drawn[row] = judge(model, originals)
        r = results[row]
        usage = f"{r['codebook_usage']:.3f}" if "codebook_usage" in r else "—"
        regularizer, losses = row.split(":")
        print(f"| {regularizer} | {losses} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['sharpness']:.2f} | {usage} | "
              f"{(time.perf_counter() - start) / 60:.1f} |", flush=True)
    if "none:l1" in results:
        chosen = choose(results)
        print(f"chosen: {chosen}")
        write_sheet((originals.permute(0, 2, 3, 1).numpy() + 1) / 2,
                    {"L1 (none:l1)": drawn["none:l1"], f"chosen ({chosen})": drawn[chosen]}, args.sheet)
        print(f"sheet: {args.sheet}")
    return 0


def choose(results: dict[str, dict[str, float]]) -> str:
    """The target: keep ≥ 0.8 of the originals' sharpness with a PSNR within 1.5 dB of L1 alone
    (none:l1). Of the rows that meet it, the best PSNR; if none does, the sharpest row within
    the PSNR margin (or none:l1 itself)."""
    floor = results["none:l1"]["psnr"] - 1.5
    close = {row: r for row, r in results.items() if r["psnr"] >= floor}
    meeting = {row: r for row, r in close.items() if r["sharpness"] >= 0.8}
    if meeting:
        return max(meeting, key=lambda row: meeting[row]["psnr"])
    return max(close, key=lambda row: close[row]["sharpness"])


if __name__ == "__main__":
    sys.exit(main())
