"""`python -m bench.proposals`: changes to the package not (or not by default) applied, each
measured with and without, in one run on one machine (prints a markdown table). Rows whose
change was adopted leave this file (see docs/DESIGN.md "Speed choices" for what they measured):
fused AdamW, the math attention backend for CPU bf16, one loader worker per core, fp16 text-cache
rows, JPEG draft decoding. Measured and kept out: channels_last; opt-in: `--compile`.

    python -m bench.proposals                 # CPU
    python -m bench.proposals --device cuda --coco DIR --random-bert DIR

Each row times the code without the change and with it the same way (bench.timing.Timer).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from bench.data import COCO_MINI
from bench.run import random_bert_overrides
from bench.timing import Timer
from bench.unet import UNetInputs, our_unet, passes
from multimodal import GenerativeMultimodalModel, model_preset
from multimodal.config import train_preset
from multimodal.device import autocast, autocast_dtype, pick_device
from multimodal.training import Trainer

Row = tuple[str, float, float, str]  # (what, ms without the change, ms with it, the change)


def channels_last(model: GenerativeMultimodalModel, batch: int, dtype: torch.dtype | None, timer: Timer) -> Row:
    """Image encoder + decoder forward+backward at the preset's size, NCHW against NHWC."""
    size = model.config.image_size
    device = model.device
    images = torch.rand(batch, 3, size, size, device=device) * 2 - 1

    def run(encoder: torch.nn.Module, decoder: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
        def step() -> None:
            with autocast(device, dtype):
                z = encoder.encode(x)
                loss = F.l1_loss(decoder.decode_from_latent(z).float(), x.float())
            loss.backward()

        return step

    now = timer(run(model.image_encoder, model.image_decoder, images))
    encoder = copy.deepcopy(model.image_encoder).to(memory_format=torch.channels_last)
    decoder = copy.deepcopy(model.image_decoder).to(memory_format=torch.channels_last)
    proposed = timer(run(encoder, decoder, images.contiguous(memory_format=torch.channels_last)))
    return (f"image encoder+decoder fwd+bwd, {size} px, batch {batch}", now * 1e3, proposed * 1e3,
            "model and images in channels_last")


def compiled_unet(device: torch.device, dtype: torch.dtype | None, batch: int, timer: Timer) -> Row:
    """torch.compile of the coco UNet, forward+backward; the compile time is reported apart."""
    config = model_preset("coco")
    unet = our_unet(config).to(device)
    inputs = UNetInputs.random(config, batch, device)
    now = timer(passes(unet, inputs, dtype)["forward+backward"])
    compiled = torch.compile(unet)
    step = passes(compiled, inputs, dtype)["forward+backward"]
    start = time.perf_counter()
    step()
    compile_s = time.perf_counter() - start
    return (f"coco UNet fwd+bwd, batch {batch}", now * 1e3, timer(step) * 1e3,
            f"torch.compile(unet) (compiling took {compile_s:.0f} s)")


def compiled_training(coco: Path, device: torch.device, overrides: dict, batch: int, timer: Timer) -> Row:
    """A whole coco-preset training step of the Trainer, eager against --compile."""
    config = model_preset("coco", **overrides)

    def step_seconds(compile: bool) -> tuple[float, float]:
        with tempfile.TemporaryDirectory() as output_dir:
            trainer = Trainer(config, train_preset(
                "coco", data_dir=str(coco), output_dir=output_dir, device=str(device), batch_size=batch,
                num_workers=0, sample_every_epoch=False, compile=compile,
            ))
            data = trainer.collate([trainer.train_set[i % len(trainer.train_set)] for i in range(batch)])
            start = time.perf_counter()
            trainer.train_step([data])
            return timer(lambda: trainer.train_step([data])), time.perf_counter() - start

    (eager, _), (compiled, first_s) = step_seconds(False), step_seconds(True)
    return (f"coco training step, batch {batch}", eager * 1e3, compiled * 1e3,
            f"train.py --compile (its first step took {first_s:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.proposals", description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--coco", type=Path, default=COCO_MINI)
    parser.add_argument("--random-bert", type=Path)
    parser.add_argument("--no-compile", action="store_true", help="leave out torch.compile (minutes on a small CPU)")
    args = parser.parse_args()
    device = pick_device(args.device)
    timer = Timer(device)
    dtype = autocast_dtype("auto", device)
    overrides = random_bert_overrides(args.random_bert) if args.random_bert else {}
    model = GenerativeMultimodalModel(model_preset("coco", **overrides)).to(device).train()
    batch = 64 if device.type == "cuda" else 8
    rows = [channels_last(model, batch, dtype, timer)]
    if not args.no_compile:
        rows.append(compiled_unet(device, dtype, 64, timer))
        if (args.coco / "annotations").is_dir():
            rows.append(compiled_training(args.coco, device, overrides, batch, timer))
    print(f"device: {device}, autocast: {dtype}\n")
    print("| what | ms without | ms with | speed-up | change |\n|---|---|---|---|---|")
    for what, now, proposed, how in rows:
        print(f"| {what} | {now:.2f} | {proposed:.2f} | {now / proposed:.2f}× | {how} |")


if __name__ == "__main__":
    main()
