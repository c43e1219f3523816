"""`python -m bench.proposals`: changes to the package, each measured with and without, in one
run on one machine (prints a markdown table). Applied so far: fused AdamW on every device, the
math attention backend for CPU bf16 training, one loader worker per core; `--compile` is opt-in.

    python -m bench.proposals                 # CPU
    python -m bench.proposals --device cuda --coco DIR --random-bert DIR

Each row times the code without the change and with it the same way (bench.timing.Timer).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from PIL import Image
from transformers import BertTokenizerFast
from torch.nn.attention import SDPBackend, sdpa_kernel

from bench.data import BATCH, COCO_MINI, loader_throughput
from bench.run import random_bert_overrides
from bench.timing import Timer, autocast
from bench.unet import UNetInputs, our_unet, passes
from multimodal import GenerativeMultimodalModel, model_preset
from multimodal.config import train_preset
from multimodal.data import CocoCaptionDataset
from multimodal.data.transforms import image_transform, load_rgb
from multimodal.device import pick_device
from multimodal.models.text_encoder import bundled_bert_path
from multimodal.training.text_cache import CaptionCollator, TextFeatureCache
from multimodal.training import Trainer
from multimodal.training.trainer import autocast_dtype, default_num_workers

Row = tuple[str, float, float, str]  # (what, ms without the change, ms with it, the change)


def fused_adamw(model: torch.nn.Module, timer: Timer) -> Row:
    """AdamW's per-parameter for-each loop against the fused kernel (CUDA and CPU both have one)."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p)

    def step_time(fused: bool) -> float:
        optimizer = torch.optim.AdamW(params, lr=1e-4, fused=fused)
        return timer(optimizer.step)

    return ("AdamW step, coco model", step_time(False) * 1e3, step_time(True) * 1e3, "fused=True (trainer.py)")


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


def text_cache_serving(model: GenerativeMultimodalModel, batch: int, timer: Timer) -> Row:
    """The warm text cache builds the batch row by row in fp32 on the CPU, then copies it over;
    padding the fp16 rows at once and casting after the copy moves half the bytes."""
    device = model.device
    cache = TextFeatureCache(model.text_encoder)
    captions = [f"a photo of {i} small red circles on the left" for i in range(batch)]
    tokens = {k: v.to(device) for k, v in model.text_encoder.tokenize(captions).items()}
    cache.states(captions, tokens["input_ids"], tokens["attention_mask"])  # warm
    length = tokens["input_ids"].shape[1]

    def padded() -> torch.Tensor:
        rows = torch.nn.utils.rnn.pad_sequence([cache.store[c] for c in captions], batch_first=True)
        rows = F.pad(rows, (0, 0, 0, length - rows.shape[1]))
        return rows.to(device, non_blocking=True).float()

    now = timer(lambda: cache.states(captions, tokens["input_ids"], tokens["attention_mask"]))
    return (f"warm text cache, batch {batch}", now * 1e3, timer(padded) * 1e3,
            "pad_sequence of the fp16 rows, .to(device) then .float() (text_cache.py)")


def jpeg_draft(coco: Path, size: int, timer: Timer) -> Row:
    """COCO JPEGs are ~640×480 and are shrunk to 224: PIL can decode them at 1/2 scale directly."""
    dataset = CocoCaptionDataset(coco, "train", size)
    paths = dataset._paths[:32]
    transform = image_transform(size)

    def draft(path: str) -> torch.Tensor:
        with Image.open(path) as image:
            image.draft("RGB", (size, size))  # JPEG only: the largest 1/2^k scale still ≥ size
            return transform(load_rgb(image.convert("RGB")))

    now = timer(lambda: [transform(load_rgb(p)) for p in paths])
    proposed = timer(lambda: [draft(p) for p in paths])
    return (f"decode + resize, 32 COCO JPEGs to {size} px", now * 1e3, proposed * 1e3,
            "Image.draft before decoding (transforms.load_rgb)")


def sdpa_math(preset: str, device: torch.device, dtype: torch.dtype | None, batch: int, timer: Timer) -> Row:
    """The UNet's attention on the math backend instead of the kernel SDPA picks by itself."""
    config = model_preset(preset)
    unet, inputs = our_unet(config).to(device), UNetInputs.random(config, batch, device)
    default_step = passes(unet, inputs, dtype, backends=lambda device, dtype: nullcontext())["forward+backward"]
    math_step = passes(unet, inputs, dtype, backends=lambda device, dtype: sdpa_kernel([SDPBackend.MATH]))["forward+backward"]
    return (f"{preset} UNet fwd+bwd, batch {batch}", timer(default_step) * 1e3, timer(math_step) * 1e3,
            "sdpa_kernel([SDPBackend.MATH]) (trainer.py attention_backends: CPU bf16 only)")


def loader_workers(coco: Path, size: int, tokenizer_path: str) -> Row:
    """2 loader workers (the old default) against the trainer's default of one per core (ms per 64 images)."""
    dataset = CocoCaptionDataset(coco, "train", size)
    collate = CaptionCollator(BertTokenizerFast.from_pretrained(tokenizer_path), 32)
    workers = default_num_workers()
    now, proposed = (loader_throughput(dataset, collate, w, 8 * BATCH * w, 2) for w in (2, workers))
    return (f"COCO loading at {size} px, per 64 images", 64e3 / now, 64e3 / proposed,
            f"num_workers={workers} (one per core, at most 16) instead of 2 (config.py)")


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
    rows = [
        fused_adamw(model, timer),
        channels_last(model, batch, dtype, timer),
        text_cache_serving(model, batch, timer),
    ]
    rows += [sdpa_math(preset, device, dtype, 64, timer) for preset in ("coco", "shapes")]
    if (args.coco / "annotations").is_dir():
        rows.append(jpeg_draft(args.coco, model.config.image_size, timer))
        rows.append(loader_workers(args.coco, model.config.image_size, overrides.get("text_encoder") or bundled_bert_path()))
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
