"""The training loop. One class whose `run()` reads top to bottom: set up, then for each
epoch train, validate, write the pictures and checkpoints. Its `__init__` is a sequence of the
builders before it: the model, the data, the adapters, the optimiser, the caches; then the stages.

Exact resumption is a design goal: the data order and each image's caption derive from
(seed, epoch, index), the checkpoint holds the RNG states, and validation and sampling run
on a forked RNG, so a run stopped at step N and resumed computes what it would have.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import signal
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset
from tqdm.auto import tqdm

from multimodal.adapters import add_adapters
from multimodal.captions import token_ids
from multimodal.config import ModelConfig, TrainConfig
from multimodal.config.model import new_diffusion_config
from multimodal.data import CaptionCollator, open_split
from multimodal.data.builtin import ensure_builtin_dataset, is_builtin
from multimodal.data.hard_negatives import NEGATIVES_PER_CAPTION, swapped_captions
from multimodal.data.replay import WithReplay
from multimodal.data.sources import has_captions
from multimodal.device import attention_backends, autocast, autocast_dtype, fork_rng
from multimodal.errors import InvalidInputError, TrainingError
from multimodal.files import write_text_atomically
from multimodal.losses import FeatureCache
from multimodal.metrics import retrieval_recall
from multimodal.models import LOSSES, GenerativeMultimodalModel
from multimodal.models.image_encoder import LATENT_PATH
from multimodal.models.text_encoder import tokenize
from multimodal.paths import CURVES_NAME, METRICS_NAME
from multimodal.provenance import trained_data
from multimodal.plots import training_curves
from multimodal.training.checkpoint import (
    keep_step_copies,
    load_checkpoint,
    recover_checkpoint,
    resumable_state,
    resumed_model_config,
    save_checkpoint,
)
from multimodal.training.autoencoder import AutoencoderObjective
from multimodal.training.distributed import Distributed, init_distributed
from multimodal.training.ema import ExponentialMovingAverage
from multimodal.training.latent_cache import LatentCache
from multimodal.training.samples import write_sample_sheet
from multimodal.training.stages import Stage, plan_stages
from multimodal.training.reporting import Reports, open_reports
from multimodal.training.text_cache import TextFeatureCache

# Short names of what a step reports, for the progress bar and metrics.csv.
SHORT_NAMES = {
    "loss": "loss",
    "contrastive": "cont",
    "reconstruction": "rec",
    "latent": "latent",
    "perceptual": "perc",
    "adversarial": "adv",
    "adaptive_weight": "adv_weight",
    "discriminator": "disc",
    "codebook_usage": "codebook_usage",
    "codebook_perplexity": "codebook_perplexity",
    "fast_path": "fast",
    "caption": "cap",
    "diffusion": "diff",
    "consistency": "consist",
    "i2t_accuracy": "i2t",
    "t2i_accuracy": "t2i",
}
NUM_SAMPLES = 6


def default_num_workers(processes: int = 1) -> int:
    """Loader workers when none are asked for: this process's share of the CPU cores it may
    use, one worker each, at most 16 (decoding COCO JPEGs must keep up with a GPU)."""
    return min(16, len(os.sched_getaffinity(0)) // processes)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# -- what a run is built from: the model, its data, adapters, optimiser and caches ---------
# What --autoencoder-frozen builds anew: the diffusion UNet and its learned "no text" condition (the
# latent statistics stay the checkpoint's: they are its frozen encoder's).
NEW_DIFFUSION = ("diffusion.unet.", "diffusion.null_text_embedding", "diffusion.null_context")


def build_model(model_config: ModelConfig | None, config: TrainConfig, device: torch.device) -> GenerativeMultimodalModel:
    """A new model of `model_config`; the model of the checkpoint `config.init_from`; or, with
    --autoencoder-frozen, a new model of `model_config` holding every weight of that checkpoint
    but its diffusion UNet's (NEW_DIFFUSION)."""
    if config.init_from is None:
        return GenerativeMultimodalModel(model_config).to(device)
    trained = GenerativeMultimodalModel.from_pretrained(config.init_from, device=device)
    if not config.autoencoder_frozen:
        return trained
    model = GenerativeMultimodalModel(model_config, tokenizer_path=config.init_from).to(device)
    kept = {name: value for name, value in trained.state_dict().items() if not name.startswith(NEW_DIFFUSION)}
    missing, unexpected = model.load_state_dict(kept, strict=False)
    if unexpected or any(not name.startswith(NEW_DIFFUSION) for name in missing):
        raise TrainingError(f"{config.init_from}'s weights do not fit the model of its own config.json")
    return model


def check_conditioning(model: GenerativeMultimodalModel, config: TrainConfig, captioned: bool) -> None:
    """A fine-tuned model that suits the data: a text-conditioned one for captions, an
    unconditional one for images alone (a new model is made to suit it)."""
    if config.init_from is None or model.config.unconditional != captioned:
        return
    if captioned:
        raise TrainingError(f"{config.init_from} is an unconditional model (trained on images without captions): its "
                            "text side never learned; train a new model on these captions (leave out --init-from)")
    if not config.autoencoder_frozen:
        raise TrainingError(f"{config.data_dir} has no captions: fine-tuning {config.init_from}'s text-conditioned "
                            "model on it would unlearn its text; train a new unconditional diffusion model on its "
                            "autoencoder with --autoencoder-frozen")


def get_data(config: TrainConfig, image_size: int, dist: Distributed) -> tuple[Dataset, Dataset]:
    """The training and validation splits of `config.data_dir` (rank 0 writes a built-in set
    first), with --replay-images images of an earlier set mixed into the training split."""
    data_dir = Path(config.data_dir)
    if is_builtin(config.preset) and dist.is_main:
        ensure_builtin_dataset(config.preset, data_dir, image_size, config.seed)
    dist.barrier()  # the other processes wait for rank 0 to write the data
    layout = dict(data_format=config.data_format, caption_column=config.caption_column,
                  image_column=config.image_column, val_fraction=config.val_fraction, seed=config.seed,
                  cache_images=config.cache_images)
    train_set = open_split(data_dir, "train", image_size, all_pairs=config.all_pairs, **layout)
    val_set = open_split(data_dir, "val", image_size, **layout)
    if config.replay_images:
        train_set = with_replay(train_set, config, image_size)
    return train_set, val_set


def with_replay(train_set: Dataset, config: TrainConfig, image_size: int) -> WithReplay:
    """The training split with --replay-images images of the earlier data set mixed in."""
    if isinstance(train_set, IterableDataset):
        raise TrainingError("--replay-images mixes images into a data set read up front; WebDataset shards and "
                            "parquet files are streamed: convert them to an image folder first")
    if config.replay_data is not None:
        earlier_dir, options = Path(config.replay_data), {}
    else:
        earlier_dir, options = trained_data(config.init_from)
    if not earlier_dir.exists():
        raise TrainingError(f"--replay-images: the data set {earlier_dir} is not there; name one with --replay-data")
    earlier = open_split(earlier_dir, "train", image_size, seed=config.seed, cache_images=config.cache_images,
                         **options)
    if isinstance(earlier, IterableDataset):
        raise TrainingError(f"--replay-data {earlier_dir}: WebDataset shards and parquet files stream their images; "
                            "convert them to an image folder first")
    return WithReplay(train_set, earlier, config.replay_images, config.seed)


def add_lora(model: GenerativeMultimodalModel, config: TrainConfig, train_set: Dataset) -> None:
    """LoRA adapters of rank --lora-rank on --lora-targets; the caption decoder's rows for the
    words of the training captions train too."""
    if isinstance(train_set, IterableDataset):
        raise TrainingError("--lora-rank needs the captions up front (the caption decoder's rows for their "
                            "words train); WebDataset shards and parquet files stream them: convert to an image "
                            "folder first")
    alpha = config.lora_alpha or config.lora_rank
    try:
        add_adapters(model, config.lora_rank, alpha, config.lora_targets_list, caption_words(model, train_set))
    except InvalidInputError as error:  # a target that names no module
        raise InvalidInputError(f"--lora-targets: {error}") from None


def set_caption_vocabulary(model: GenerativeMultimodalModel, config: TrainConfig, train_set: Dataset) -> None:
    """The words the caption decoder may write (--caption-vocabulary): those of the training
    captions, added to a fine-tuned checkpoint's own; every word for `all` and for streamed
    captions, which are not known up front. (A LoRA run's are its base's and its captions',
    which `add_adapters` adds.)"""
    lm = model.caption_decoder.lm
    if config.caption_vocabulary == "all" or isinstance(train_set, IterableDataset):
        lm.set_vocabulary(None)
    elif config.init_from is None:
        lm.set_vocabulary(caption_words(model, train_set))
    else:
        lm.add_words(caption_words(model, train_set))


def caption_words(model: GenerativeMultimodalModel, train_set: Dataset) -> list[int]:
    """The token ids of every training caption: the caption decoder's vocabulary, and its rows
    that a LoRA run trains."""
    return token_ids(model.tokenizer, (c for captions in train_set.references.values() for c in captions))


def create_optimizer(model: GenerativeMultimodalModel, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over the trainable parameters: weight decay on the matrices, none on biases and norms."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate,
        fused=device.type in ("cuda", "cpu"),  # one kernel for all parameters (CPU: 4× the for-loop)
    )


def compile_model(model: GenerativeMultimodalModel) -> None:
    """torch.compile the image encoder, decoder and UNet in place, so that parameter names (and
    so checkpoints) stay those of the plain model."""
    for part in (model.image_encoder, model.image_decoder, model.diffusion.unet):
        part.compile()


def create_text_cache(model: GenerativeMultimodalModel, config: TrainConfig) -> TextFeatureCache | None:
    """The cache of a frozen BERT's token states (--text-cache-mb); None when BERT trains."""
    if not model.config.freeze_bert:
        return None
    return TextFeatureCache(model.text_encoder, config.text_cache_mb * 2**20)


def create_collator(model: GenerativeMultimodalModel, config: TrainConfig) -> CaptionCollator:
    """Batches of tokenised captions, with --hard-negatives swapped captions beside them."""
    negatives = dict(negatives=swapped_captions, per_caption=NEGATIVES_PER_CAPTION) if config.hard_negatives else {}
    return CaptionCollator(partial(tokenize, model.tokenizer, max_length=model.config.max_text_length), **negatives)


class Trainer:
    def __init__(self, model_config: ModelConfig | None, train_config: TrainConfig, resume: bool = False) -> None:
        """`model_config` builds a new model; with `train_config.init_from` it is None and the
        model is that checkpoint's (with LoRA adapters when `lora_rank` is set). With `resume` the
        model is the one latest/ records, which `model_config` (None: take it) must agree with."""
        # The data folder is recorded as an absolute path, so evaluate.py finds it from anywhere.
        self.config = c = train_config.replace(data_dir=str(train_config.resolved_data_dir.absolute()))
        self.output_dir = Path(c.output_dir)
        self.dist, self.device = init_distributed(c.device)
        seed_everything(c.seed)

        # Resuming continues the model the checkpoint records: read (and checked) before anything is built.
        resumed = self._resumable_state() if resume else None
        if resumed is None and c.autoencoder_frozen and model_config is None:
            model_config = new_diffusion_config(c.init_from, {})  # a new UNet of the checkpoint's own settings
        # The one place the data decides the model: images without captions train an unconditional one.
        self.captioned = has_captions(c.data_dir, c.data_format)
        if model_config is not None and not self.captioned:
            model_config = model_config.without_captions()
        if resumed is not None and (c.init_from is None or c.autoencoder_frozen):  # a model this run built
            model_config = resumed_model_config(resumed, model_config.to_dict() if model_config else {})
        # Every process builds the same initial weights (the data sets draw no random numbers);
        # after that each draws its own noise.
        self.model = build_model(model_config, c, self.device)
        check_conditioning(self.model, c, self.captioned)
        self.model_config = self.model.config
        self.train_set, self.val_set = get_data(c, self.model_config.image_size, self.dist)
        self.streamed = isinstance(self.train_set, IterableDataset)  # WebDataset shards, parquet files
        if c.lora_rank:
            add_lora(self.model, c, self.train_set)
        elif resumed is None and self.captioned:  # a resumed run writes the words its checkpoint records
            set_caption_vocabulary(self.model, c, self.train_set)
        # The autoencoder stage's perceptual network and discriminator (training-time modules).
        self.objective = AutoencoderObjective(c, self.device, self.dist) if c.autoencoder_epochs else None
        torch.manual_seed(c.seed + self.dist.rank)

        self.trainable = {name for name, p in self.model.named_parameters() if p.requires_grad}
        self.ema = ExponentialMovingAverage(self.model, c.ema_decay)
        self.optimizer = create_optimizer(self.model, c, self.device)
        self.model.set_gradient_checkpointing(c.gradient_checkpointing)
        if c.compile:
            compile_model(self.model)
        self.text_cache = create_text_cache(self.model, c)
        self.collate = create_collator(self.model, c)
        self.autocast = autocast_dtype(c.precision, self.device)
        # fp16's narrow range needs loss scaling; a disabled scaler passes everything through.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.autocast is torch.float16)

        # One optimiser step takes grad_accum batches of batch_size in every process.
        self.images_per_step = c.batch_size * self.dist.world_size * c.grad_accum
        self.steps_per_epoch = self._count_steps_per_epoch()
        self.stages = plan_stages(c, self.steps_per_epoch, self.model.loss_weights())
        self.total_steps = self.stages[-1].end_step

        self._start_at_step_zero()
        if resume:
            self._resume()

    def _count_steps_per_epoch(self) -> int:
        """Optimiser steps in one pass over the training split (a TrainingError if not one)."""
        c = self.config
        if self.streamed:
            # A stream cannot wrap around: an epoch is the full steps every process has data for.
            # Each loader worker drops its last, partial batch (the contrastive loss gathers
            # equal batches from every process), up to batch_size - 1 samples a worker.
            usable = self.train_set.share - max(1, self.num_workers) * (c.batch_size - 1)
            steps = max(0, usable) // (c.batch_size * c.grad_accum)
        else:
            steps = math.ceil(len(self.train_set) / self.images_per_step)
        if steps == 0:
            fewer = " or, for shards, --num-workers" if self.streamed else ""
            raise TrainingError(f"{len(self.train_set)} training samples do not fill one step of "
                                f"{self.images_per_step}; lower --batch-size{fewer}")
        return steps

    def _start_at_step_zero(self) -> None:
        """The loop's state before its first step (`_resume` then loads a checkpoint's)."""
        self.step = 0
        self.stage: Stage | None = None  # the stage the model is set up for; entered at the first step
        self.best: dict[str, Any] = {"stage": None, "val_loss": math.inf}
        self.history: list[dict[str, Any]] = []
        self.epoch_sums: dict[str, float] = {}
        self.nonfinite_in_a_row = 0
        self.nonfinite_total = 0
        self.stop_signal: str | None = None
        self.step_seconds: dict[str, float] = {}  # each stage's recent seconds per step, for the time left
        self.train_model: torch.nn.Module = self.model
        self.latent_cache: LatentCache | None = None  # the stage's, when it freezes the encoder
        self.trunk_cache: LatentCache | None = None  # or when only a frozen pretrained trunk is fixed
        self.log: Reports | None = None  # with --report-to, while run() runs

    def stage_of(self, step: int) -> Stage:
        """The stage that trains step `step` (the last stage for steps past the end)."""
        return next((stage for stage in self.stages if step < stage.end_step), self.stages[-1])

    def _enter(self, stage: Stage) -> None:
        """Set the model up for `stage`: its starting weights, which parameters learn, and the
        DDP wrapper (built anew, as DDP requires when the set of trainable parameters changes)."""
        if stage.start_from_ema and self.step == stage.first_step:
            # The UNet then learns the latents of the encoder that generation will really use,
            # and the frozen parts stay equal in the raw and EMA models.
            self.model.load_state_dict(self.ema.module.state_dict())
        stage.apply(self.model, self.trainable)
        self.stage = stage
        self.latent_cache, self.trunk_cache = self._image_caches(stage)
        if self.dist.enabled:
            self.train_model = DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=stage.find_unused_parameters,
            )

    def _image_caches(self, stage: Stage) -> tuple[LatentCache | None, LatentCache | None]:
        """With --cache-images, what `stage` computes from the images without training it, once
        per image: the latent of a frozen encoder, or else the features of a frozen pretrained
        trunk. Returns (latent cache, trunk cache), None for each not kept."""
        if not self.config.cache_images:
            return None, None
        encoder = self.model.image_encoder
        if not any(stage.is_trained(name) for name in self.trainable if name.startswith(LATENT_PATH)):
            return LatentCache(encoder.encode), None
        return None, (LatentCache(encoder.trunk_features) if encoder.frozen_trunk else None)

    # -- checkpoints ----------------------------------------------------------------------
    def _discriminator(self) -> tuple[torch.nn.Module, torch.optim.Optimizer] | None:
        """The autoencoder stage's discriminator and its optimiser, which latest/ keeps."""
        if self.objective is None or self.objective.discriminator is None:
            return None
        return self.objective.discriminator, self.objective.optimizer

    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "best": self.best | {"val_loss": self.best["val_loss"] if math.isfinite(self.best["val_loss"]) else None},
            "history": self.history,
            "epoch_sums": self.epoch_sums,
            "nonfinite_total": self.nonfinite_total,
            "autoencoder_objective": self.objective.state() if self.objective else None,
            "model_config": self.model_config.to_dict(),
            "train_config": self.config.to_dict(),
        }

    def save(self, name: str = "latest") -> Path:
        """latest/ can be resumed from; best/ holds only what using the model needs."""
        directory = self.output_dir / name
        base = Path(self.config.init_from) if self.config.lora_rank else None
        discriminator = self._discriminator()
        save_checkpoint(directory, self.model, self.ema.module, self.optimizer, self._state(), name == "latest", base,
                        discriminator, self.scaler)
        if name == "latest":
            keep_step_copies(directory, self.step, self.config.keep_last)
        return directory

    def _resumable_state(self) -> dict[str, Any]:
        """latest/'s trainer state (rank 0 first completes a save that a crash cut off)."""
        latest = self.output_dir / "latest"
        if self.dist.is_main:
            recover_checkpoint(latest)  # a save that a crash cut off between its two renames
        self.dist.barrier()
        return resumable_state(latest)

    def _resume(self) -> None:
        discriminator = self._discriminator()
        state = load_checkpoint(self.output_dir / "latest", self.model, self.ema.module, self.optimizer, discriminator,
                                self.scaler)
        if self.objective:
            self.objective.load_state(state.get("autoencoder_objective") or {})
        self.step = state["step"]
        best = state.get("best") or {}
        self.best = {"stage": best.get("stage"), "val_loss": best.get("val_loss") or math.inf}
        self.history = state["history"]
        self.epoch_sums = state["epoch_sums"]
        self.nonfinite_total = state["nonfinite_total"]
        if self.dist.enabled:  # the checkpoint holds rank 0's RNG: give each process its own again
            torch.manual_seed(self.config.seed + 1_000_003 * self.step + self.dist.rank)

    # -- one step -------------------------------------------------------------------------
    def _forward(
        self, model: torch.nn.Module, batch: dict, stage: Stage, latent_cache: LatentCache | None = None,
        trunk_cache: LatentCache | None = None, only: tuple[str, ...] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The model's output on `batch` for `stage`'s losses (`only` those of them it names)."""
        images = batch["images"].to(self.device)
        input_ids = batch["input_ids"].to(self.device)
        attention_mask = batch["attention_mask"].to(self.device)
        cache = self.text_cache
        states = cache.states(batch["captions"], input_ids, attention_mask) if cache is not None else None
        weights = {name: weight for name, weight in stage.loss_weights.items() if name in (only or LOSSES)}
        negatives = {}
        if "negative_input_ids" in batch and "contrastive" in weights:
            negatives = {name: batch[name].to(self.device)
                         for name in ("negative_input_ids", "negative_attention_mask", "negative_valid")}
            if cache is not None:
                negatives["negative_text_states"] = cache.states(
                    batch["negative_captions"], negatives["negative_input_ids"], negatives["negative_attention_mask"]
                )
        with autocast(self.device, self.autocast):
            latents = latent_cache.latents(batch["image_ids"], images) if latent_cache is not None else None
            features = trunk_cache.latents(batch["image_ids"], images) if trunk_cache is not None else None
            out = model(images, input_ids, attention_mask, text_states=states, loss_weights=weights, latents=latents,
                        trunk_features=features, **negatives)
            # The autoencoder stage's perceptual and adversarial losses.
            if only is None and len(weights) < len(stage.loss_weights):
                last_layer = self.model.image_decoder.last_layer if torch.is_grad_enabled() else None
                out |= self.objective.losses(images, out, stage.loss_weights, self.step, last_layer)
            return out

    def train_step(self, batches: list[dict]) -> dict[str, float] | None:
        """One optimiser step over `grad_accum` batches. Returns the step's metrics, averaged over
        the processes, or None when a loss or a gradient was not finite in some process (in fp16:
        the loss scale overflowed) and every process skipped the step. The metrics stay on the
        device until one read-back at the end."""
        stage = self.stage_of(self.step)
        if stage is not self.stage:
            self._enter(stage)
        cache = self._contrastive_features(batches, stage)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        names: list[str] = []
        sums: torch.Tensor | None = None
        with self.model.contrastive.accumulating(cache) if cache is not None else nullcontext():
            for i, batch in enumerate(batches):
                last = i == len(batches) - 1
                if cache is not None:
                    cache.live = i
                # DDP averages gradients once per step, on the last batch, not on every one.
                with nullcontext() if last or not self.dist.enabled else self.train_model.no_sync():
                    out = self._forward(self.train_model, batch, stage, self.latent_cache, self.trunk_cache)
                    loss = out["loss"]
                    if cache is not None:  # the loss over the whole cache is the step's own, not one batch's share
                        loss = loss + (len(batches) - 1) * stage.loss_weights["contrastive"] * out["contrastive"]
                    loss = self.scaler.scale(loss)
                    if "discriminator" in out and out["discriminator"].requires_grad:  # once it trains
                        # Its gradients reach the discriminator alone, unscaled: they stay local until
                        # its own step, and an overflow there must not set the processes' scales apart.
                        loss = loss + out["discriminator"]
                    # With --gradient-checkpointing, blocks run again in the backward pass: with the
                    # forward's attention kernels, or torch refuses tensors of another kernel's shapes.
                    with attention_backends(self.device, self.autocast):
                        (loss / len(batches)).backward()
                names = [name for name in SHORT_NAMES if name in out]
                values = torch.stack([out[name].detach().float() for name in names]) / len(batches)
                sums = values if sums is None else sums + values
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        if self.objective and self.objective.discriminator:
            norm = norm + torch.nn.utils.get_total_norm(
                [p.grad for p in self.objective.discriminator.parameters() if p.grad is not None])
        # One read-back per step: the metrics, the gradients' norm and whether any process was asked to stop.
        stop = torch.tensor([float(self.stop_signal is not None)], device=self.device)
        reduced = self.dist.all_reduce(torch.cat([stop, norm.reshape(1).float(), sums])).tolist()
        if reduced[0] > 0 and self.stop_signal is None:
            self.stop_signal = "SIGTERM"  # another process got the signal: stop after the same step
        metrics = {SHORT_NAMES[name]: value for name, value in zip(names, reduced[2:])}
        if not (math.isfinite(metrics["loss"]) and math.isfinite(reduced[1])):
            self.scaler.update()  # in fp16: a smaller loss scale for the next step
            return self._skip_nonfinite()
        self.nonfinite_in_a_row = 0
        lr = stage.learning_rate(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.objective:
            self.objective.step(lr, self.step)
        self.ema.update(self.model, self.step)
        return metrics | {"lr": lr}

    def _contrastive_features(self, batches: list[dict], stage: Stage) -> FeatureCache | None:
        """With --grad-accum N the contrastive loss ranks each pair among all N batches' (open_clip's
        --accum-freq): their features first, without gradients (one more forward of the encoders
        per batch). In eval mode, so that no running statistic moves twice and the cached features
        are the noise-free ones (no dropout, the latent's mean). None for one batch or no such loss."""
        if len(batches) == 1 or "contrastive" not in stage.loss_weights:
            return None
        cache = FeatureCache()
        self.model.eval()
        with torch.no_grad(), self.model.contrastive.accumulating(cache):
            for batch in batches:
                self._forward(self.model, batch, stage, self.latent_cache, self.trunk_cache, only=("contrastive",))
        return cache

    def _skip_nonfinite(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.objective and self.objective.optimizer:
            self.objective.optimizer.zero_grad(set_to_none=True)
        self.nonfinite_in_a_row += 1
        self.nonfinite_total += 1
        if self.nonfinite_in_a_row >= self.config.max_nonfinite_steps:
            scale = f" (fp16's loss scale is down to {self.scaler.get_scale():g}), or --precision fp32"
            raise TrainingError(
                f"{self.nonfinite_in_a_row} non-finite losses in a row at step {self.step}; "
                f"stopping (last good checkpoint: {self.output_dir / 'latest'}). Try a lower --lr"
                f"{scale if self.scaler.is_enabled() else ''}."
            )
        return None

    # -- validation -----------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, stage: Stage) -> dict[str, float]:
        """The EMA weights on the validation split: the losses `stage` trains (so that they
        compare with the training losses), and retrieval R@1/R@5 both ways."""
        model = self.ema.module.eval()
        loader = self._loader(self.val_set, None if self.streamed else list(range(len(self.val_set))))
        sums: dict[str, torch.Tensor] = {}
        image_embeddings, text_embeddings, captions = [], [], []
        with fork_rng(self.device, self.config.seed):
            for batch in loader:
                out = self._forward(model, batch, stage)
                for name, short in SHORT_NAMES.items():
                    if name in out:
                        sums[short] = sums.get(short, 0.0) + out[name].float() * len(batch["captions"])
                if "image_embedding" in out:  # the autoencoder stage makes no embeddings
                    image_embeddings.append(out["image_embedding"].float().cpu())
                    text_embeddings.append(out["text_embedding"].float().cpu())
                captions += batch["captions"]
        metrics = {f"val_{k}": float(v) / len(captions) for k, v in sums.items()}
        if not image_embeddings or self.model_config.unconditional:  # no captions to retrieve
            return metrics
        first = {}  # each distinct caption → the row of its first occurrence
        for row, caption in enumerate(captions):
            first.setdefault(caption, row)
        index = {caption: i for i, caption in enumerate(first)}
        texts = torch.cat(text_embeddings)[list(first.values())]
        recall = retrieval_recall(torch.cat(image_embeddings), texts, [index[c] for c in captions], ks=(1, 5))
        return metrics | {f"val_{k}": v for k, v in recall.items()}

    # -- the loop -------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, order: list[int] | None, drop_last: bool = False) -> DataLoader:
        """Batches of `dataset` in `order` (None for a stream, which orders itself)."""
        return DataLoader(
            dataset,
            batch_size=self.config.batch_size,
            sampler=order,
            drop_last=drop_last,
            num_workers=self.num_workers,
            collate_fn=self.collate,
            pin_memory=self.device.type == "cuda",
            # Its own generator: creating a loader must not draw from the global RNG.
            generator=torch.Generator().manual_seed(self.config.seed),
        )

    @property
    def num_workers(self) -> int:
        if self.config.num_workers is not None:
            return self.config.num_workers
        return 0 if self.config.cache_images else default_num_workers(self.dist.world_size)

    def _epoch_order(self, epoch: int) -> list[int] | None:
        """This process's share of the epoch's shuffled order (DistributedSampler; with one
        process it is the whole order); None for a stream, which splits and shuffles itself."""
        if self.streamed:
            return None
        sampler = DistributedSampler(
            self.train_set, num_replicas=self.dist.world_size, rank=self.dist.rank, shuffle=True, seed=self.config.seed
        )
        sampler.set_epoch(epoch)
        return list(sampler)

    def time_left(self) -> str:
        """The whole run's remaining training time, from each stage's measured step time (a
        stage not yet started is assumed as slow as the current one)."""
        current = self.step_seconds.get(self.stage_of(self.step).name, 0.0)
        seconds = sum(
            max(0, stage.end_step - max(self.step, stage.first_step)) * self.step_seconds.get(stage.name, current)
            for stage in self.stages
        )
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stop_signal = signal.Signals(signum).name

    def run(self) -> dict[str, Any]:
        """Train until `total_steps`; returns the last epoch's metrics row."""
        if self.dist.is_main:
            if not self.captioned:
                tqdm.write(f"{self.config.data_dir} has no captions (images-only): training the autoencoder and an "
                           "unconditional diffusion model, the caption losses left out")
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self.log = open_reports(self.config.report_to, self.output_dir, self.config.log_every, self.step,
                                    self.config.to_dict())
            if self.history:  # resumed: the table as latest/ has it (a save cut off before it was written)
                self._write_history()
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while self.step < self.total_steps and not self.stop_signal:
                self._run_epoch(self.step // self.steps_per_epoch)
        finally:
            for s, handler in handlers.items():
                signal.signal(s, handler)
            if self.log is not None:
                self.log.close()
                self.log = None
        if self.stop_signal and self.dist.is_main:
            path = self.save()
            tqdm.write(f"{self.stop_signal}: stopped at step {self.step}; saved {path} (resume with --resume)")
        self.dist.barrier()
        return self.history[-1] if self.history else {}

    def _run_epoch(self, epoch: int) -> None:
        c = self.config
        start = self.step - epoch * self.steps_per_epoch
        self.train_set.set_epoch(epoch)
        per_step = c.batch_size * c.grad_accum
        order = self._epoch_order(epoch)
        if order is None:  # a stream resumed mid-epoch reads past the batches already trained on
            batches = itertools.islice(self._loader(self.train_set, None, drop_last=True), start * c.grad_accum, None)
        else:
            batches = iter(self._loader(self.train_set, order[start * per_step :]))
        last_step = min(self.total_steps, (epoch + 1) * self.steps_per_epoch)
        label = f" · {self.stage_of(self.step).name}" if len(self.stages) > 1 else ""
        bar = tqdm(
            total=last_step - epoch * self.steps_per_epoch,
            initial=start,
            desc=f"epoch {epoch + 1}/{math.ceil(self.total_steps / self.steps_per_epoch)}{label}",
            dynamic_ncols=True,
            disable=not self.dist.is_main,
        )
        tick, images_per_second = time.perf_counter(), 0.0
        while self.step < last_step:
            group = [batch for _, batch in zip(range(c.grad_accum), batches)]
            if not group:
                break
            stage = self.stage_of(self.step)
            metrics = self.train_step(group)
            now = time.perf_counter()
            seconds, tick = max(now - tick, 1e-9), now
            speed = sum(len(b["captions"]) for b in group) * self.dist.world_size / seconds
            images_per_second = speed if images_per_second == 0 else 0.9 * images_per_second + 0.1 * speed
            previous = self.step_seconds.get(stage.name, seconds)
            self.step_seconds[stage.name] = 0.9 * previous + 0.1 * seconds
            self.step += 1
            if metrics is not None:
                for key, value in metrics.items():
                    self.epoch_sums[key] = self.epoch_sums.get(key, 0.0) + value
                self.epoch_sums["steps"] = self.epoch_sums.get("steps", 0.0) + 1
                if self.log is not None:
                    self.log.step(self.step, metrics)
                shown = {k: f"{v:.3g}" for k, v in metrics.items() if k != "lr"}
                speeds = {"lr": f"{metrics['lr']:.1e}", "img/s": f"{images_per_second:.0f}", "run left": self.time_left()}
                bar.set_postfix(shown | speeds, refresh=False)
            bar.update(1)
            if self.step % c.save_every == 0 and self.dist.is_main:
                self.save()
            if self.stop_signal:
                break
        bar.close()
        if self.stop_signal:
            return
        if self.dist.is_main:
            self._end_epoch(epoch, images_per_second)
        self.dist.barrier()  # the others wait while rank 0 validates and saves

    def _end_epoch(self, epoch: int, images_per_second: float) -> None:
        stage = self.stage_of(self.step - 1)  # the stage this epoch's last step trained
        steps = max(self.epoch_sums.pop("steps", 0.0), 1.0)
        row: dict[str, Any] = {"epoch": epoch + 1, "step": self.step, "stage": stage.name}
        row |= {f"train_{k}": v / steps for k, v in self.epoch_sums.items() if k != "lr"}
        row["lr"] = self.optimizer.param_groups[0]["lr"]
        row["images_per_s"] = images_per_second
        row |= self.validate(stage)
        self.epoch_sums = {}
        self.history.append(row)
        self.save()  # before the table lists the epoch: a kill -9 in between leaves no row latest/ lacks
        self._write_history()
        sheet = self._write_samples(epoch) if self.config.sample_every_epoch else None
        if self.log is not None:
            self.log.epoch(self.step, row, sheet)
        recall = f"  i2t R@1 {row['val_i2t_R@1']:.3f}  t2i R@1 {row['val_t2i_R@1']:.3f}" if "val_i2t_R@1" in row else ""
        tqdm.write(f"epoch {epoch + 1} ({stage.name}): val loss {row['val_loss']:.4f}{recall}")
        # best/ is the best epoch of the latest stage: a later stage's loss measures something
        # else, and its model is the one generation needs.
        if stage.name != self.best["stage"] or row["val_loss"] < self.best["val_loss"]:
            self.best = {"stage": stage.name, "val_loss": row["val_loss"]}
            self.save("best")

    def _write_history(self) -> None:
        """metrics.csv and curves.png: the epochs of `history`, which latest/ holds."""
        table = pd.DataFrame(self.history)
        write_text_atomically(self.output_dir / METRICS_NAME, table.to_csv(index=False))
        training_curves(table, self.output_dir / CURVES_NAME)

    def _write_samples(self, epoch: int) -> Path:
        count = min(NUM_SAMPLES, len(self.val_set))
        items = list(itertools.islice(self.val_set, count)) if self.streamed else [self.val_set[i] for i in range(count)]
        images = torch.stack([item["image"] for item in items]).to(self.device)
        prompts = [item["caption"] for item in items]
        path = self.output_dir / "samples" / f"epoch_{epoch + 1:03d}.png"
        with fork_rng(self.device):
            write_sample_sheet(self.ema.module, prompts, images, path)
        return path
