"""How a run trains: data, schedule, checkpoints, hardware, fine-tuning."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from multimodal import presets
from multimodal.adapters.targets import LORA_TARGETS
from multimodal.config.model import ModelConfig
from multimodal.config.options import Config, option, require, suggest
from multimodal.config.sampling import PRECISIONS
from multimodal.paths import is_link_loop

TRAIN_PRECISIONS = PRECISIONS  # fp16 trains with loss scaling (torch.amp.GradScaler)
# The dataset layouts --data-dir may hold (multimodal/data/layouts.py reads them); auto detects one.
DATA_FORMATS = ("auto", "coco", "imagefolder", "paired", "captions-txt", "webdataset", "parquet", "karpathy",
                "images-only")
# The TrainConfig fields that say how a data set is read: evaluation and the data tools read it the same way.
DATA_FIELDS = ("data_format", "caption_column", "image_column", "val_fraction")
MAX_LORA_RANK = 512  # wider than any layer it adapts: a low-rank adapter no more
CAPTION_VOCABULARIES = ("captions", "all")  # what --caption-vocabulary takes (training/trainer.py applies it)
REPORT_TO = ("none", "tensorboard", "wandb", "tensorboard,wandb")  # where train.py logs besides metrics.csv


@dataclass
class TrainConfig(Config):
    """How a run trains: data, schedule, checkpoints, hardware. `train.py` has a flag for each field."""

    preset: str = option(
        "coco", "the model, training and sampling settings a run starts from, and the data it reads unless "
        "--data-dir says (the list above says what each is; built-in sets are drawn on first use)", group="data",
        choices=presets.names,
    )
    data_dir: str | None = option(
        None, "dataset folder (COCO, image folder, paired files, captions.txt) or WebDataset shards "
        "('shards/{000000..000099}.tar' or a folder of .tar) (default: data/coco/coco2017, or data/<preset> "
        "for a built-in set)", group="data",
    )
    data_format: str = option(
        "auto", "layout of --data-dir; auto: detected from its files (images-only: a folder of images and no caption "
        "file of any kind, which trains the autoencoder and an unconditional diffusion model)", group="data",
        choices=DATA_FORMATS,
    )
    caption_column: str = option("text", "metadata column (or WebDataset .json key) that holds the captions",
                                 group="data")
    image_column: str = option("file_name", "metadata column that names the image file", group="data")
    val_fraction: float = option(
        0.05, "fraction held out for validation where a layout has no validation split (chosen by a hash of "
        "the file name, so the same files every run)", group="data",
    )
    all_pairs: bool = option(False, "every (image, caption) pair per epoch instead of one caption per image",
                             group="data")
    hard_negatives: bool = option(
        False, "contrastive loss: each image must also rank its caption above the same caption with its two "
        "'<colour> <shape>' objects swapped, and with only their colours swapped (NegCLIP's hard negatives; for "
        "captions of two objects, as the scenes set's; other captions get none)", group="data",
    )
    caption_vocabulary: str = option(
        "captions", "the words the caption decoder may write. captions: the wordpieces of the training captions "
        "(a fine-tune adds its new ones to its base's; WebDataset shards and parquet files stream their captions, "
        "so there it is every word); all: every word of BERT's vocabulary, 30,522 (slower to train and decode)",
        group="data", choices=CAPTION_VOCABULARIES,
    )
    num_workers: int | None = option(
        None, "DataLoader worker processes per process (default: one per CPU core, at most 16; none when "
        "--cache-images)", group="data"
    )
    text_cache_mb: int = option(
        1024, "with --freeze-bert: the most memory (MB, per process) BERT's cached features take; the least "
        "recently used captions are recomputed past it", group="hardware",
    )
    cache_images: bool = option(
        False, "keep decoded images in memory (uint8) and read them in the main process: for small data sets",
        group="data",
    )

    autoencoder_epochs: int = option(
        0, "first train the autoencoder alone this many epochs (the image encoder's latent path, its regulariser and "
        "the image decoder, with L1, perceptual and adversarial losses); later stages keep it frozen",
        group="autoencoder",
    )
    autoencoder_learning_rate: float | None = option(
        None, "peak learning rate of the autoencoder stage (default: --lr)", group="autoencoder"
    )
    perceptual_weight: float = option(
        1.0, "autoencoder stage: weight of the perceptual distance (EfficientNet-Lite0 features, LPIPS-style)",
        group="autoencoder",
    )
    adversarial_weight: float = option(
        0.5, "autoencoder stage: weight of the PatchGAN loss, times the adaptive weight ‖∇rec‖ / ‖∇adv‖ at the "
        "decoder's last layer (0: no discriminator)", group="autoencoder",
    )
    discriminator_start: int = option(
        0, "optimiser step from which the discriminator trains and its loss counts", group="autoencoder"
    )
    discriminator_width: int = option(64, "channels of the discriminator's first layer; doubles per layer",
                                      group="autoencoder")
    epochs: int = option(
        20, "passes over the training images (the first stage when --diffusion-epochs is set; 0: none, so that only "
        "the autoencoder stage or, on a trained --init-from model, the diffusion stage trains)", group="schedule",
    )
    diffusion_epochs: int = option(
        0, "then train the diffusion UNet alone this many epochs, on the frozen encoders (0: all parts jointly)",
        group="schedule",
    )
    max_steps: int | None = option(None, "stop after this many optimiser steps, whatever the epochs", group="schedule")
    batch_size: int = option(64, "images per step and process (global batch: × processes × --grad-accum)",
                             group="schedule")
    grad_accum: int = option(
        1, "batches whose gradients add up to one optimiser step; the contrastive loss ranks each pair among all "
        "of them, as one batch of N × --batch-size (their features first computed without gradients: one more "
        "forward of the encoders per batch)", group="schedule",
    )
    learning_rate: float = option(2e-4, "peak learning rate (AdamW; linear warm-up, then cosine decay)",
                                  group="schedule", flag="--lr")
    diffusion_learning_rate: float | None = option(
        None, "peak learning rate of the diffusion stage (default: --lr)", group="schedule"
    )
    consistency_weight: float = option(
        0.0, "diffusion stage: weight of -log p(caption | the clean latent the UNet predicts) under the frozen "
        "caption decoder, low-noise steps counting most, so that the UNet draws what the caption says (needs "
        "--diffusion-epochs: the first stage trains the decoder); 0: off", group="schedule",
    )
    weight_decay: float = option(0.01, "AdamW weight decay", group="schedule")
    warmup_epochs: float = option(2.0, "epochs of linear learning-rate warm-up", group="schedule")
    max_grad_norm: float = option(1.0, "gradients are clipped to this norm", group="schedule")
    ema_decay: float = option(0.999, "decay of the weights' moving average, which generation uses", group="schedule")
    seed: int = option(0, "seed for the weights, the data order and the noise", group="schedule", seed=True)

    output_dir: str = option("checkpoints", "where checkpoints, metrics and samples go", group="output")
    save_every: int = option(500, "steps between saves of latest/ (it is also saved at each epoch end)",
                             group="output")
    keep_last: int = option(0, "besides latest/, keep step_NNNNNNN/ copies of the last K saves", group="output")
    sample_every_epoch: bool = option(True, "write samples/epoch_NNN.png after each epoch", group="output")
    max_nonfinite_steps: int = option(20, "this many non-finite losses in a row stop the run", group="output")
    report_to: str = option(
        "none", "also log the losses, metrics, learning rate and sample sheets to TensorBoard "
        "(<output-dir>/tensorboard/) and/or Weights & Biases (<output-dir>/wandb/; WANDB_MODE=offline keeps it "
        "local); each needs its package", group="output", choices=REPORT_TO,
    )
    log_every: int = option(50, "steps between logged training losses (their mean over those steps)", group="output")

    device: str = option("auto", "where to train; auto: CUDA when present", group="hardware",
                         choices=("auto", "cpu", "cuda"))
    precision: str = option(
        "auto", "autocast precision; auto: bf16 on GPUs and CPUs with native bf16 units, else fp16 on CUDA (with "
        "loss scaling; steps whose gradients overflow are skipped), else fp32", group="hardware",
        choices=TRAIN_PRECISIONS,
    )
    compile: bool = option(False, "torch.compile the image encoder, image decoder and UNet (slow first steps)",
                           group="hardware")
    gradient_checkpointing: bool = option(
        False, "trade compute for memory: the image encoder's and decoder's stages, BERT's and the caption "
        "decoder's layers and the UNet's blocks keep no activations for the backward pass but compute them again "
        "there (larger batches fit; a step takes about one more forward pass of them; the same gradients and "
        "weights)", group="hardware",
    )

    init_from: str | None = option(
        None, "fine-tune: start from this trained checkpoint's weights and model (fresh optimiser and schedule)",
        group="fine-tuning",
    )
    lora_rank: int = option(
        0, "train only LoRA adapters of this rank (needs --init-from): checkpoints are adapters that point to "
        "their base; 0: train the weights themselves", group="fine-tuning",
    )
    lora_alpha: float | None = option(None, "LoRA scale numerator: updates are scaled by alpha / rank "
                                      "(default: the rank, scale 1)", group="fine-tuning")
    lora_targets: str = option(
        LORA_TARGETS, "comma-separated ends of the names of modules that get adapters, or of whole parts (all their "
        "linear and convolution layers); the default: the UNet's attention and conditioning projections, the "
        "embedding heads and the fast path; '+NAMES' adds NAMES to the default. The caption decoder's rows for "
        "the captions' words always learn", group="fine-tuning",
    )
    autoencoder_frozen: bool = option(
        False, "with --init-from RUN: keep RUN's autoencoder (the image encoder's latent path and the image decoder) "
        "frozen in every stage and train a new diffusion UNet on its latent, which the diffusion flags may set up "
        "anew (--noise-schedule, --prediction-type, --unet-width, …); with --epochs 0 --diffusion-epochs N only the "
        "UNet and the fast path train (a diffusion model trained apart from its autoencoder)", group="fine-tuning",
    )
    replay_images: int = option(
        0, "fine-tune: mix this many images of the data the --init-from checkpoint was trained on (as it records "
        "it; --replay-data names another set) into the training split, so what the model knew stays known",
        group="fine-tuning",
    )
    replay_data: str | None = option(
        None, "the data set --replay-images draws from, read in its detected layout (default: the one --init-from "
        "was trained on)", group="fine-tuning",
    )

    def validate(self) -> None:
        for name, least in (("epochs", 0), ("batch_size", 1), ("grad_accum", 1), ("save_every", 1),
                            ("max_nonfinite_steps", 1), ("log_every", 1), ("diffusion_epochs", 0), ("keep_last", 0),
                            ("text_cache_mb", 1), ("replay_images", 0), ("autoencoder_epochs", 0),
                            ("discriminator_start", 0), ("discriminator_width", 1)):
            value = getattr(self, name)
            wanted = "cannot be negative" if least == 0 else f"must be at least {least}"
            require(value >= least, name, f"{wanted}, got {value}")
        require(self.max_steps is None or self.max_steps >= 1, "max_steps", f"must be at least 1, got {self.max_steps}")
        require(self.num_workers is None or self.num_workers >= 0, "num_workers",
                 f"cannot be negative, got {self.num_workers}")
        for name in ("learning_rate", "diffusion_learning_rate", "autoencoder_learning_rate"):
            value = getattr(self, name)
            require(value is None or (value > 0 and math.isfinite(value)), name, f"must be above 0, got {value}")
        require(self.epochs > 0 or self.autoencoder_epochs > 0 or self.diffusion_epochs > 0, "epochs",
                "is 0 and so are --autoencoder-epochs and --diffusion-epochs: nothing would train")
        require(self.epochs > 0 or self.diffusion_epochs == 0 or self.autoencoder_epochs > 0 or self.init_from,
                "epochs", "0 leaves the encoders as they start, and a diffusion stage on them would learn a random "
                "latent: give --init-from RUN (a trained run's) or --autoencoder-epochs N")
        require(not self.autoencoder_frozen or self.init_from is not None, "autoencoder_frozen",
                "needs --init-from RUN: the trained run whose autoencoder it keeps")
        require(not (self.autoencoder_frozen and self.autoencoder_epochs), "autoencoder_frozen",
                "keeps the --init-from autoencoder as it is: leave out --autoencoder-epochs")
        require(not (self.autoencoder_frozen and self.lora_rank), "autoencoder_frozen",
                "trains a new diffusion UNet, which has no trained weights for adapters to fine-tune: leave out "
                "--lora-rank")
        require(self.consistency_weight == 0 or self.diffusion_epochs > 0, "consistency_weight",
                "needs --diffusion-epochs N: the caption decoder that judges the UNet is trained in the first stage")
        for name in ("weight_decay", "warmup_epochs", "perceptual_weight", "adversarial_weight", "consistency_weight"):
            require(getattr(self, name) >= 0, name, f"cannot be negative, got {getattr(self, name)}")
        require(self.max_grad_norm > 0, "max_grad_norm", f"must be above 0, got {self.max_grad_norm}")
        require(0 <= self.ema_decay < 1, "ema_decay", f"must be in [0, 1), got {self.ema_decay}")
        require(0 < self.val_fraction < 1, "val_fraction", f"must be in (0, 1), got {self.val_fraction}")
        for name in ("caption_column", "image_column"):
            require(bool(getattr(self, name).strip()), name, "must not be empty")
        require(0 <= self.lora_rank <= MAX_LORA_RANK, "lora_rank", f"must be from 0 to {MAX_LORA_RANK}, got {self.lora_rank}")
        require(self.lora_rank == 0 or self.init_from is not None, "lora_rank",
                 "needs --init-from CHECKPOINT: adapters fine-tune a trained model")
        require(self.lora_alpha is None or self.lora_alpha > 0, "lora_alpha", f"must be above 0, got {self.lora_alpha}")
        require(self.replay_images == 0 or self.init_from is not None, "replay_images",
                 "needs --init-from CHECKPOINT: replay keeps what a trained model knew")
        require(self.replay_data is None or self.replay_images > 0, "replay_data",
                 "is read only with --replay-images N")
        for name in ("data_dir", "replay_data"):
            require(getattr(self, name) is None or not is_link_loop(getattr(self, name)), name,
                    f"{getattr(self, name)} is a link loop: it points back to itself; give the real folder")
        require(all(self.lora_targets_list), "lora_targets",
                 f"must be comma-separated module names, got {self.lora_targets!r}")

    @property
    def lora_targets_list(self) -> list[str]:
        """The target names; a leading '+' adds them to the default targets."""
        names = LORA_TARGETS + "," + self.lora_targets[1:] if self.lora_targets.startswith("+") else self.lora_targets
        return [name.strip() for name in names.split(",")]

    @property
    def resolved_data_dir(self) -> Path:
        """The data folder this run reads: the one given, else the preset's default."""
        return Path(self.data_dir) if self.data_dir else default_data_dir(self.preset)


def train_preset(name: str, **overrides: Any) -> TrainConfig:
    """The `TrainConfig` of a named preset (multimodal/presets.py), with field overrides."""
    preset = presets.get(name)
    TrainConfig.check_names(overrides)
    return TrainConfig(**{**preset.training, "preset": name, **overrides})


def default_data_dir(preset: str) -> Path:
    """The folder a preset reads when no data folder is given."""
    return Path(presets.get(preset).data_dir)


# The design documents' names for our config fields, where theirs differ (a flag's "-" and "_" are
# one): a --config key or a command-line flag in their words sets the field named here. The one table
# of them; multimodal/cli.py turns it into flags.
DESIGN_NAMES = {
    "vae_epochs": "autoencoder_epochs",
    "vae_lr": "autoencoder_learning_rate",
    "vae_batch_size": "batch_size",  # one batch size serves every stage
    "ldm_epochs": "diffusion_epochs",
    "ldm_lr": "diffusion_learning_rate",
    "num_embeddings": "codebook_size",
    "commitment_cost": "vq_commitment",
    "latent_dim": "latent_channels",
    "noise_steps": "num_timesteps",
}


def split_run_config(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(ModelConfig fields, TrainConfig fields) of one flat mapping of a whole run's settings, as
    the seed design writes its config dict: each key goes to the config that has that field, a
    design document's name (DESIGN_NAMES) as ours. A ValueError names an unknown key, or two keys
    that set the same field."""
    model_fields, train_fields = set(ModelConfig.field_names()), set(TrainConfig.field_names())
    model: dict[str, Any] = {}
    train: dict[str, Any] = {}
    for key, value in values.items():
        name = DESIGN_NAMES.get(key, key)
        if name in model or name in train:
            other = next(k for k in values if DESIGN_NAMES.get(k, k) == name)
            raise ValueError(f"keys {other!r} and {key!r} both set {name}")
        if name not in model_fields | train_fields:
            known = sorted(model_fields | train_fields | set(DESIGN_NAMES))
            raise ValueError(f"unknown key {key!r}{suggest(key, known)}")
        (model if name in model_fields else train)[name] = value
    return model, train


def read_run_config(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(TrainConfig fields, ModelConfig fields) of a run configuration file: JSON or YAML, either
    what a run records (a trainer_state.json, whose train_config and model_config replay it) or
    one flat mapping of both configs' fields (`split_run_config`). Unknown keys are refused with
    their name."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text)
        else:
            import json

            values = json.loads(text)
    except FileNotFoundError:
        raise ValueError(f"--config {path} not found") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:  # yaml's errors are ValueErrors too
        raise ValueError(f"--config {path} cannot be read: {str(error).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise ValueError(f"--config {path} must hold a mapping of config fields, not {type(values).__name__}")
    try:
        if "train_config" in values:  # a trainer_state.json: the rest is the run's progress, not its configuration
            train, model = values["train_config"], values.get("model_config") or {}
            if not isinstance(train, dict) or not isinstance(model, dict):
                raise ValueError("train_config and model_config must be mappings")
            TrainConfig.check_names(train)
            ModelConfig.check_names(model)
        else:
            model, train = split_run_config(values)
    except ValueError as error:
        raise ValueError(f"--config {path}: {error}") from None
    return train, model
