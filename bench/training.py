"""Training throughput: whole optimiser steps of the real Trainer, and each part of a step on
its own (forward+backward in the trainer's autocast, as GenerativeMultimodalModel.forward
composes them: every part gets its inputs detached, so its backward stops at its border).

Each configuration runs in a fresh process so its peak RSS is its own. A stage with the
contrastive loss also times a step accumulated over ACCUMULATED_BATCHES batches (--grad-accum),
whose contrastive loss ranks every pair among all of them: the price is the features' first
pass without gradients.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.timing import Timer, peak_rss_mb, precision_name
from multimodal.config import model_preset, train_preset
from multimodal.device import autocast
from multimodal.training import Trainer

ACCUMULATED_BATCHES = 2  # the --grad-accum step measured: its overhead per batch does not depend on N


@dataclass
class TrainingJob:
    preset: str
    precision: str  # the trainer's --precision: fp32, bf16 or auto
    batch_size: int
    data_dir: str
    data_name: str
    timer: Timer
    model_overrides: dict = field(default_factory=dict)


def run_in_fresh_process(job: TrainingJob) -> dict:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(bench_training, job).result()


def bench_training(job: TrainingJob) -> dict:
    """Steps per second of each stage the preset trains, and the parts of a step."""
    timer = dataclasses.replace(job.timer, redone=0, still_busy=0)  # this process's own counts
    device = timer.device
    with tempfile.TemporaryDirectory() as output_dir:
        trainer = Trainer(
            model_preset(job.preset, **job.model_overrides),
            train_preset(
                job.preset, data_dir=job.data_dir, output_dir=output_dir, device=str(device),
                batch_size=job.batch_size, num_workers=0, precision=job.precision, sample_every_epoch=False,
            ),
        )
        batch = trainer.collate([trainer.train_set[i] for i in range(job.batch_size)])
        stages = []
        for stage in trainer.stages:
            trainer.step = stage.first_step
            trainer.train_step([batch])  # enters the stage (the diffusion stage: EMA weights, all but the UNet frozen)
            trainer.step += 1
            stages.append(measure_stage(trainer, batch, timer))
    result = {
        "preset": job.preset,
        "image_size": trainer.model_config.image_size,
        "batch": job.batch_size,
        "data": job.data_name,
        "precision": precision_name(trainer.autocast),
        "frozen_bert": trainer.model_config.freeze_bert,
        "caption_words": len(trainer.model.caption_decoder.lm.words),  # its vocabulary: the training captions' words
        "stages": stages,
        "peak_rss_mb": peak_rss_mb(),
        "timings_redone": timer.redone,
        "timings_still_busy": timer.still_busy,
    }
    if device.type == "cuda":
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def measure_stage(trainer: Trainer, batch: dict, timer: Timer) -> dict:
    """The whole step (warm text cache) and its FLOPs, the step with a cold cache, and the parts."""
    step = timer(lambda: trainer.train_step([batch]))
    with FlopCounterMode(display=False) as flops:  # what the step computes, against which its time is set
        trainer.train_step([batch])
    result = {
        "stage": trainer.stage.name,
        "step_ms": step * 1e3,
        "step_gflop": flops.get_total_flops() / 1e9,
        "images_per_s": len(batch["captions"]) / step,
        "parts_ms": part_times(trainer, batch, timer),
    }
    if trainer.text_cache is not None:

        def cold_step() -> None:
            trainer.text_cache.clear()
            trainer.train_step([batch])

        result["step_cold_cache_ms"] = timer(cold_step) * 1e3
    if "contrastive" in trainer.stage.loss_weights:
        result["accumulation"] = accumulation_times(trainer, batch, timer)
    return result


def accumulation_times(trainer: Trainer, batch: dict, timer: Timer) -> dict:
    """A step over ACCUMULATED_BATCHES batches (as --grad-accum groups them), and in it the pass
    that computes every batch's contrastive features without gradients first: its cost beside N
    plain steps' worth of work is that pass."""
    batches = [batch] * ACCUMULATED_BATCHES
    step = timer(lambda: trainer.train_step(batches))
    features = timer(lambda: trainer._contrastive_features(batches, trainer.stage))
    return {"batches": ACCUMULATED_BATCHES, "step_ms": step * 1e3, "feature_pass_ms": features * 1e3}


def part_times(trainer: Trainer, batch: dict, timer: Timer) -> dict[str, float]:
    """ms of each part of one step of the trainer's current stage."""
    model, device, dtype, cache = trainer.model, trainer.device, trainer.autocast, trainer.text_cache
    captions = batch["captions"]
    images = batch["images"].to(device)
    ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    stage = trainer.stage.name

    # What each part receives from the one before it, computed once.
    with torch.no_grad(), autocast(device, dtype):
        states = cache.states(captions, ids, mask) if cache else model.text_encoder.token_states(ids, mask)
        z, image_embedding = model.image_encoder(images)
        text_embedding = model.text_encoder.project(states, mask)

    def leaf(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.detach().requires_grad_()

    def trained(loss: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def forward_backward() -> None:
            model.zero_grad(set_to_none=True)
            with autocast(device, dtype):
                value = loss()
            value.float().backward()

        return forward_backward

    def image_encoder_no_grad() -> None:
        with torch.no_grad(), autocast(device, dtype):
            model.text_encoder.project(states, mask)
            model.image_encoder(images)

    def optimizer_and_ema() -> None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), trainer.config.max_grad_norm)
        trainer.optimizer.step()
        trainer.ema.update(model, trainer.step)

    def diffusion() -> torch.Tensor:
        return model.diffusion.training_loss(z, text_embedding, states, mask)

    # The optimiser first, while the gradients of the last whole step are still there.
    times = {"optimizer + EMA": timer(optimizer_and_ema)}
    parts: dict[str, Callable[[], object]] = {
        "data (main process)": lambda: trainer.collate([trainer.train_set[i] for i in range(len(captions))])
    }
    if cache is not None:
        parts["BERT (cache warm)"] = lambda: cache.states(captions, ids, mask)
    else:
        parts["BERT"] = trained(lambda: model.text_encoder.token_states(ids, mask).float().mean())
    if stage == "diffusion":
        parts["image encoder (no grad)"] = image_encoder_no_grad
    else:
        parts["image encoder"] = trained(lambda: sum(out.float().mean() for out in model.image_encoder(images)))
        parts["text head + contrastive"] = trained(
            lambda: model.contrastive(leaf(image_embedding), model.text_encoder.project(states, mask))["loss"]
        )
        parts["image decoder"] = trained(
            lambda: (model.image_decoder(leaf(z)) - images).abs().mean()
            + model.fast_path_loss(leaf(z), leaf(text_embedding))
        )
        parts["caption decoder"] = trained(lambda: model.caption_decoder(leaf(z), ids, mask))
    if stage != "encoders":
        parts["diffusion UNet"] = trained(diffusion)
    times |= {name: timer(fn) for name, fn in parts.items()}
    if cache is not None:

        def cold() -> None:
            cache.clear()
            cache.states(captions, ids, mask)

        times["BERT (cache cold)"] = timer(cold)
    return {name: seconds * 1e3 for name, seconds in times.items()}
