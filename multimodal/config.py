"""Configuration dataclasses and the named presets.

Every size of the model is a field of `ModelConfig`; a config round-trips through JSON
(`to_dict` / `from_dict`), which is how checkpoints describe the model they hold.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

PREDICTION_TYPES = ("epsilon", "v", "sample")
NOISE_SCHEDULES = ("linear", "cosine")


def num_stride2_stages(image_size: int, latent_size: int) -> int:
    """How many stride-2 stages take `image_size` down to `latent_size` (image = latent * 2^k)."""
    k, size = 0, image_size
    while size > latent_size and size % 2 == 0:
        size //= 2
        k += 1
    if size != latent_size or k == 0:
        raise ValueError(
            f"image size {image_size} must be {latent_size}·2^k with k ≥ 1 "
            f"(e.g. {latent_size * 8}, {latent_size * 16}, {latent_size * 32})"
        )
    return k


# Generation defaults that ImageTextGenerator and the command lines share; here, in a module
# that imports nothing heavy, so that `--help` answers without loading torch.
SAMPLERS = ("ddim", "ddpm", "dpm")
DEFAULT_SAMPLER = "ddim"
DEFAULT_STEPS = 50
DEFAULT_GUIDANCE_SCALE = 3.0
DEFAULT_MAX_NEW_TOKENS = 30


@dataclass
class ModelConfig:
    """Everything needed to build a `GenerativeMultimodalModel`."""

    # Images and the shared latent.
    image_size: int = 224
    latent_channels: int = 256
    latent_size: int = 7
    use_simple_cnn: bool = True  # False: torchvision ResNet-50 trunk
    resnet_weights: str | None = None  # local .safetensors file for the ResNet-50 trunk
    encoder_width: int = 64  # first stage of the SimpleCNN; doubles per stage up to latent_channels
    decoder_width: int = 64  # last stage of the transposed CNN
    embed_dim: int = 512
    proj_hidden_dim: int = 1024
    pool_channels: int = 32  # the image head keeps where things are: 1×1 conv, then flatten

    # Text encoder (BERT through transformers).
    text_encoder: str | None = None  # a transformers name or local folder; None: bundled MiniLM
    bert_config: dict[str, Any] | None = None  # build BERT from this (random init) instead of loading
    freeze_bert: bool = False
    max_text_length: int = 32

    # Caption decoder (a GPT-2 with cross-attention to the image latent).
    caption_width: int = 256
    caption_layers: int = 4
    caption_heads: int = 4
    caption_dropout: float = 0.1
    max_caption_length: int = 48

    # Latent diffusion.
    unet_width: int = 256
    unet_blocks: int = 2  # residual blocks on each side of the UNet
    unet_heads: int = 4
    num_timesteps: int = 1000
    noise_schedule: str = "cosine"
    prediction_type: str = "v"
    cond_drop: float = 0.1
    latent_stats_momentum: float = 0.01

    # Contrastive temperature and the weights of the total loss.
    init_logit_scale: float = 1 / 0.07
    max_logit_scale: float = 100.0
    contrastive_weight: float = 1.0
    recon_weight: float = 0.5
    caption_weight: float = 1.0
    diffusion_weight: float = 0.1

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Refuse configurations that cannot build, with a message that says which field."""
        num_stride2_stages(self.image_size, self.latent_size)
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}")
        if self.noise_schedule not in NOISE_SCHEDULES:
            raise ValueError(f"noise_schedule must be one of {NOISE_SCHEDULES}, got {self.noise_schedule!r}")
        if not 0.0 <= self.cond_drop < 1.0:
            raise ValueError(f"cond_drop must be in [0, 1), got {self.cond_drop}")
        if self.max_caption_length < self.max_text_length:
            raise ValueError("max_caption_length must be at least max_text_length")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {', '.join(unknown)}")
        return cls(**values)


MODEL_PRESETS: dict[str, dict[str, Any]] = {
    # COCO at 224 px: the full-size model of the design guide.
    "coco": {},
    # The built-in shapes set: small images and narrow widths so a 2-core CPU trains it in minutes.
    "shapes": dict(
        image_size=56,
        encoder_width=32,
        decoder_width=32,
        proj_hidden_dim=512,
        freeze_bert=True,
        max_text_length=24,
        max_caption_length=32,
        caption_width=128,
        caption_layers=2,
        caption_heads=4,
        unet_width=128,
        unet_blocks=1,
        prediction_type="sample",
    ),
}


def model_preset(name: str, **overrides: Any) -> ModelConfig:
    """The `ModelConfig` of a named preset (`coco` or `shapes`), with field overrides."""
    if name not in MODEL_PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(MODEL_PRESETS)}")
    return ModelConfig(**{**MODEL_PRESETS[name], **overrides})


@dataclass
class TrainConfig:
    """How a run trains: data, optimisation, checkpoints. `train.py` exposes every field."""

    preset: str = "coco"
    data_dir: str | None = None  # None: data/coco/coco2017, or data/shapes for the shapes preset
    output_dir: str = "checkpoints"
    epochs: int = 20
    diffusion_epochs: int = 0  # >0: after `epochs`, train only the diffusion UNet this long on frozen encoders
    max_steps: int | None = None  # stop after this many optimiser steps, whatever the epochs
    batch_size: int = 64  # per process; the global batch is batch_size × processes × grad_accum
    grad_accum: int = 1  # batches whose gradients add up to one optimiser step
    learning_rate: float = 2e-4
    weight_decay: float = 0.01
    warmup_epochs: float = 2.0
    max_grad_norm: float = 1.0
    ema_decay: float = 0.999
    all_pairs: bool = False  # every (image, caption) pair per epoch instead of one caption per image
    num_workers: int | None = None  # DataLoader workers per process; None: one per CPU core (at most 16)
    seed: int = 0
    device: str = "auto"
    save_every: int = 500  # steps between saves of latest/ (and at every epoch end)
    keep_last: int = 0  # besides latest/, keep step_NNNNNNN/ copies of the last K saves (0: none)
    sample_every_epoch: bool = True  # write samples/epoch_NNN.png
    max_nonfinite_steps: int = 20  # this many non-finite losses in a row stop the run
    precision: str = "auto"  # auto: bf16 autocast on CUDA and on CPUs with native bf16, else fp32
    compile: bool = False  # torch.compile the image encoder, image decoder and UNet (slow first steps)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "coco": {},
    # Measured (bench/ and the README): joint epochs first, then diffusion alone on the frozen
    # encoder converges in fewer steps than training everything jointly.
    "shapes": dict(
        preset="shapes", epochs=4, diffusion_epochs=6, batch_size=32, learning_rate=1e-3, warmup_epochs=0.25,
        ema_decay=0.995,
    ),
}


def train_preset(name: str, **overrides: Any) -> TrainConfig:
    """The `TrainConfig` of a named preset, with field overrides."""
    if name not in TRAIN_PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(TRAIN_PRESETS)}")
    return TrainConfig(**{**TRAIN_PRESETS[name], **overrides})
