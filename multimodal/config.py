"""Configuration dataclasses and the named presets.

Every default, its help text and its checks live here, once: a field is declared with
`option(default, help, ...)`, validates itself on construction, and the command lines build
their flags from the fields. A config round-trips through JSON (`to_dict` / `from_dict`),
which is how checkpoints describe the model they hold. Nothing here imports torch, so
`--help` and usage errors answer at once.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from multimodal.errors import ConfigError

PREDICTION_TYPES = ("epsilon", "v", "sample")
NOISE_SCHEDULES = ("linear", "cosine")
SAMPLERS = ("ddim", "ddpm", "dpm")
SAMPLERS_WITH_ETA = ("ddim",)  # the samplers whose step takes DDIM's eta
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # what generation and evaluation may compute in
TRAIN_PRECISIONS = PRECISIONS[:3]  # fp16 training would need loss scaling, which the trainer does not do
# The dataset layouts --data-dir may hold (multimodal/data/layouts.py reads them); auto detects one.
DATA_FORMATS = ("auto", "coco", "imagefolder", "paired", "captions-txt", "webdataset")
# The TrainConfig fields that say how a data set is read: evaluation and the data tools read it the same way.
DATA_FIELDS = ("data_format", "caption_column", "image_column", "val_fraction")
REPORT_TO = ("none", "tensorboard")  # where train.py logs besides metrics.csv
# The image encoder's trunk (multimodal/models/image_encoder.py); the last two are ImageNet-shaped
# networks whose trunk may be frozen, and efficientnet_lite0 comes with its ImageNet weights.
IMAGE_ENCODERS = ("simple_cnn", "resnet50", "efficientnet_lite0")
EMBEDDING_POOLINGS = ("flatten", "mean")  # how the image embedding head reads the latent z
PRETRAINED_STRIDE = 32  # how much efficientnet_lite0 shrinks an image: 224 px → 7×7
# What sits between the image encoder's features and the latent z (models/latent_regularizer.py).
LATENT_REGULARIZERS = ("none", "kl", "vq")


def option(
    default: Any,
    help: str,
    *,
    group: str = "",
    flag: str | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A config field with what a person needs to set it: its help text, the `--help` group it
    is listed in, its flag when that is not `--field-name`, and the values it may take."""
    return dataclasses.field(default=default, metadata={"help": help, "group": group, "flag": flag, "choices": choices})


def suggest(name: str, known: list[str]) -> str:
    """' (did you mean X?)' for the closest known name, or ''."""
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _require(ok: bool, field: str, problem: str) -> None:
    if not ok:
        raise ConfigError(field, problem)


ConfigT = TypeVar("ConfigT", bound="_Config")


class _Config:
    """What every config shares: checks on construction, JSON round trips that refuse unknown
    keys, and `replace` with a suggestion for a misspelt field."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            choices = field.metadata.get("choices")
            value = getattr(self, field.name)
            _require(
                choices is None or value in choices, field.name, f"must be one of {', '.join(choices or ())}, got {value!r}"
            )
        self.validate()

    def validate(self) -> None:
        """Refuse values that cannot work, with a ConfigError that names the field."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [field.name for field in dataclasses.fields(cls)]

    @classmethod
    def check_names(cls, names: Any) -> None:
        """A ValueError naming the first unknown field, with the closest known one."""
        known = cls.field_names()
        for name in names:
            if name not in known:
                raise ValueError(f"unknown {cls.__name__} field {name!r}{suggest(name, known)}")

    @classmethod
    def from_dict(cls: type[ConfigT], values: dict[str, Any]) -> ConfigT:
        cls.check_names(values)
        return cls(**values)

    def replace(self: ConfigT, **changes: Any) -> ConfigT:
        """A copy with some fields changed (and checked again)."""
        self.check_names(changes)
        return dataclasses.replace(self, **changes)


def num_stride2_stages(image_size: int, latent_size: int) -> int:
    """How many stride-2 stages take `image_size` down to `latent_size` (image = latent * 2^k)."""
    k, size = 0, image_size
    while size > latent_size and size % 2 == 0:
        size //= 2
        k += 1
    if size != latent_size or k == 0:
        raise ConfigError(
            "image_size",
            f"must be {latent_size}·2^k with k ≥ 1 (e.g. {latent_size * 8}, {latent_size * 16}, {latent_size * 32}), "
            f"got {image_size}",
        )
    return k


@dataclass
class ModelConfig(_Config):
    """Everything needed to build a `GenerativeMultimodalModel`."""

    image_size: int = option(224, "image side in pixels; must be 7·2^k (56, 112, 224, …)", group="images")
    latent_channels: int = option(256, "channels of the shared spatial latent z", group="images")
    latent_size: int = option(7, "side of the spatial latent z", group="images")
    image_encoder: str = option(
        "simple_cnn", "image encoder: the small CNN from scratch, a ResNet-50 trunk, or EfficientNet-Lite0 with "
        "ImageNet weights (image size 32 × latent size: 224 px for 7×7)", group="images", choices=IMAGE_ENCODERS,
    )
    freeze_image_trunk: bool = option(
        False, "keep the resnet50 or efficientnet_lite0 trunk fixed (in eval mode; its features cached with "
        "--cache-images): only the 1×1 convolution to the latent and the parts after it learn (simple_cnn has no "
        "trunk: all of it learns)", group="images",
    )
    resnet_weights: str | None = option(None, "a .safetensors file of ResNet-50 weights for the trunk", group="images")
    encoder_width: int = option(64, "first stage of the CNN encoder; doubles per stage", group="images")
    decoder_width: int = option(64, "last stage of the transposed-CNN decoder; doubles per stage inwards", group="images")
    embed_dim: int = option(512, "size of the shared image-text embedding", group="images")
    proj_hidden_dim: int = option(1024, "hidden width of the embedding heads", group="images")
    pool_channels: int = option(32, "channels the image head keeps per position (1×1 conv, then flatten)", group="images")
    embedding_pooling: str = option(
        "flatten", "how the image head reads z: flatten keeps where things are (the shapes sets need it), mean "
        "averages the positions away (photographs: fewer weights to fit)", group="images", choices=EMBEDDING_POOLINGS,
    )
    latent_regularizer: str = option(
        "none", "the latent z: the encoder's features as they are; kl: a diagonal Gaussian (sampled in training, "
        "its mean at inference) pulled towards N(0, 1); vq: the nearest entry of a learned codebook",
        group="images", choices=LATENT_REGULARIZERS,
    )
    codebook_size: int = option(8192, "entries of the VQ codebook (--latent-regularizer vq)", group="images")
    vq_commitment: float = option(0.25, "VQ commitment cost: how hard the encoder is pulled to its code",
                                  group="images")
    vq_reseed_steps: int = option(
        200, "a VQ code no training batch chose for this many steps is re-seeded from an encoder output",
        group="images",
    )

    text_encoder: str | None = option(
        None, "a transformers name or local folder for BERT (default: the bundled MiniLM)", group="text"
    )
    bert_config: dict[str, Any] | None = option(None, "build BERT from this config, randomly initialised", group="text")
    freeze_bert: bool = option(False, "keep BERT fixed and cache its features", group="text")
    text_context_layers: int = option(
        0, "trainable Transformer layers over BERT's token states before they are pooled into the text embedding: "
        "a frozen BERT's mean pool barely tells a caption from the one with its two objects swapped", group="text",
    )
    max_text_length: int = option(32, "tokens of a caption BERT reads (longer ones are cut)", group="text")

    caption_width: int = option(256, "width of the caption decoder (a GPT-2)", group="caption decoder")
    caption_layers: int = option(4, "layers of the caption decoder", group="caption decoder")
    caption_heads: int = option(4, "attention heads of the caption decoder", group="caption decoder")
    caption_dropout: float = option(0.1, "dropout in the caption decoder", group="caption decoder")
    caption_position_std: float = option(
        0.02, "initial scale of the learned positions of the caption decoder's memory tokens (the latent's "
        "cells): 1 lets it learn quickly which side an object is on (scenes); 0.02 leaves that to the latent, "
        "which the UNet then also reads (shapes; docs/DESIGN.md)", group="caption decoder",
    )
    max_caption_length: int = option(48, "longest caption the decoder reads or writes, in tokens", group="caption decoder")

    unet_width: int = option(256, "channels of the diffusion UNet", group="diffusion")
    unet_blocks: int = option(2, "residual blocks on each side of the UNet", group="diffusion")
    unet_heads: int = option(4, "attention heads in the UNet", group="diffusion")
    attention_resolutions: str = option(
        "7", "comma-separated sides at which the UNet attends; it halves the latent while the side is even (a "
        "14×14 latent: levels 14 and 7), and each must be one of those levels", group="diffusion",
    )
    num_timesteps: int = option(1000, "diffusion training timesteps", group="diffusion")
    noise_schedule: str = option("cosine", "beta schedule of the noise", group="diffusion", choices=NOISE_SCHEDULES)
    prediction_type: str = option(
        "v", "what the UNet predicts: the noise, the velocity v or the clean latent", group="diffusion",
        choices=PREDICTION_TYPES,
    )
    cond_drop: float = option(0.1, "fraction of captions dropped in training, for guidance", group="diffusion")
    latent_stats_momentum: float = option(0.01, "momentum of the running latent statistics", group="diffusion")

    init_logit_scale: float = option(1 / 0.07, "initial contrastive inverse temperature", group="losses")
    max_logit_scale: float = option(100.0, "largest contrastive inverse temperature", group="losses")
    contrastive_weight: float = option(1.0, "weight of the contrastive loss", group="losses")
    recon_weight: float = option(0.5, "weight of the pixel reconstruction loss (L1)", group="losses")
    fast_path_weight: float = option(
        0.5, "weight of the fast path's loss (the latent predicted from the text embedding)", group="losses"
    )
    caption_weight: float = option(1.0, "weight of the captioning loss", group="losses")
    diffusion_weight: float = option(0.1, "weight of the diffusion loss when it trains jointly", group="losses")
    kl_weight: float = option(
        1e-6, "weight of the KL term (--latent-regularizer kl); the term is summed over the latent and divided by "
        "the image's pixel values, so it stands to the mean L1 as in latent diffusion", group="losses",
    )
    codebook_weight: float = option(1.0, "weight of the VQ codebook and commitment term (--latent-regularizer vq)",
                                    group="losses")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelConfig":
        """As for every config, and a checkpoint written before `image_encoder` existed (its
        `use_simple_cnn`) still loads."""
        if "use_simple_cnn" in values:
            values = dict(values)
            values["image_encoder"] = "simple_cnn" if values.pop("use_simple_cnn") else "resnet50"
        return super().from_dict(values)

    def validate(self) -> None:
        num_stride2_stages(self.image_size, self.latent_size)
        _require(
            self.image_encoder != "efficientnet_lite0" or self.image_size == PRETRAINED_STRIDE * self.latent_size,
            "image_size",
            f"must be {PRETRAINED_STRIDE} × latent_size ({PRETRAINED_STRIDE * self.latent_size}) for "
            f"efficientnet_lite0, got {self.image_size}",
        )
        _require(0.0 <= self.cond_drop < 1.0, "cond_drop", f"must be in [0, 1), got {self.cond_drop}")
        _require(
            self.max_caption_length >= self.max_text_length,
            "max_caption_length",
            f"must be at least max_text_length ({self.max_text_length}), got {self.max_caption_length}",
        )
        for name in ("latent_channels", "embed_dim", "caption_width", "unet_width", "num_timesteps", "max_text_length",
                     "codebook_size", "vq_reseed_steps"):
            _require(getattr(self, name) >= 1, name, f"must be at least 1, got {getattr(self, name)}")
        _require(self.text_context_layers >= 0, "text_context_layers", f"cannot be negative, got {self.text_context_layers}")
        _require(self.caption_position_std >= 0, "caption_position_std",
                 f"cannot be negative, got {self.caption_position_std}")
        weights = ("contrastive_weight", "recon_weight", "fast_path_weight", "caption_weight", "diffusion_weight")
        for name in weights:
            _require(getattr(self, name) >= 0, name, f"cannot be negative (0 leaves the loss out), got {getattr(self, name)}")
        _require(any(getattr(self, name) > 0 for name in weights), "contrastive_weight",
                 "and the other loss weights cannot all be 0: nothing would train")
        for name in ("vq_commitment", "kl_weight", "codebook_weight"):
            _require(getattr(self, name) >= 0, name, f"cannot be negative, got {getattr(self, name)}")
        levels = self.unet_levels
        wanted = ", ".join(map(str, levels))
        try:
            attending = self.attention_resolutions_list
        except ValueError:
            raise ConfigError("attention_resolutions", f"must be comma-separated sides among {wanted}, "
                              f"got {self.attention_resolutions!r}") from None
        for side in attending:
            _require(side in levels, "attention_resolutions",
                     f"{side} is not a level of the UNet over a {self.latent_size}×{self.latent_size} latent ({wanted})")

    @property
    def unet_levels(self) -> list[int]:
        """The sides the UNet works at: the latent's, halved while it is even."""
        levels = [self.latent_size]
        while levels[-1] % 2 == 0:
            levels.append(levels[-1] // 2)
        return levels

    @property
    def attention_resolutions_list(self) -> list[int]:
        return [int(side) for side in self.attention_resolutions.split(",") if side.strip()]


@dataclass
class SamplingConfig(_Config):
    """How text→image draws a picture, as one value (what transformers' GenerationConfig is for
    captions). The command lines, `ImageTextGenerator` and the model pass it along whole."""

    num_inference_steps: int = option(
        50, "denoising steps: 10-20 for a preview, 30-50 usually, up to 100 for the best", flag="--steps"
    )
    guidance_scale: float = option(
        3.0, "how closely to follow the prompt: 1 the conditional prediction alone, 0 ignores the prompt"
    )
    sampler: str = option("ddim", "the diffusion sampler (diffusers' scheduler)", choices=SAMPLERS)
    eta: float = option(0.0, "DDIM's noise: 0 deterministic, 1 like DDPM (ddim only)")
    guidance_rescale: float = option(
        0.0, "in [0, 1]: pull a guided prediction's spread back to the conditional one's (tames high guidance)"
    )
    use_diffusion: bool = option(
        True, "diffusion; --no-diffusion: the fast preview, decoded straight from the text embedding",
        flag="--diffusion",
    )
    num_candidates: int = option(
        1, "draw N pictures per image asked and keep the one the caption decoder finds likeliest to be "
        "described by the prompt (best of N, as DALL·E reranked its samples): N times the work, for many more "
        "pictures right where the model binds words to objects unreliably; the fast preview draws one. The "
        "default depends on the preset the checkpoint was trained with",
        flag="--candidates",
    )

    def validate(self) -> None:
        _require(self.num_inference_steps >= 1, "num_inference_steps", f"must be at least 1, got {self.num_inference_steps}")
        _require(self.guidance_scale >= 0, "guidance_scale", f"must be 0 or more, got {self.guidance_scale}")
        _require(self.eta >= 0, "eta", f"must be 0 or more, got {self.eta}")
        _require(
            self.eta == 0 or self.sampler in SAMPLERS_WITH_ETA,
            "eta",
            f"is DDIM's noise; the {self.sampler} sampler does not use it (use --sampler ddim or leave eta at 0)",
        )
        _require(
            0 <= self.guidance_rescale <= 1, "guidance_rescale", f"must be in [0, 1], got {self.guidance_rescale}"
        )
        _require(self.num_candidates >= 1, "num_candidates", f"must be at least 1, got {self.num_candidates}")

    def describe(self) -> str:
        """How diffusion draws, in words: what evaluate.py prints and model cards say."""
        best_of = f", the best of {self.num_candidates} by the caption decoder" if self.num_candidates > 1 else ""
        return f"{self.sampler}, {self.num_inference_steps} steps, guidance {self.guidance_scale:g}{best_of}"


@dataclass
class InferenceConfig(_Config):
    """How generation and evaluation compute, whatever they draw or write: `ImageTextGenerator`
    takes its fields as arguments and the command lines build their flags from them."""

    precision: str = option(
        "auto", "autocast precision; auto: bf16 on CUDA, fp32 on the CPU (where the same seed gives the same "
        "pixels); bf16 on a CPU without bf16 units is emulated and slow", group="model and device",
        choices=PRECISIONS,
    )


@dataclass
class ExportConfig(_Config):
    """How `python -m multimodal.export` writes its ONNX graphs."""

    precision: str = option(
        "fp32", "precision of the graphs' weights and computations; fp16 only where ONNX Runtime runs it "
        "(the export refuses otherwise and says why)", choices=("fp32", "fp16"),
    )


DEFAULT_MAX_NEW_TOKENS = 30  # the longest caption generation writes by default, in tokens

MODEL_PRESETS: dict[str, dict[str, Any]] = {
    # COCO at 224 px: the full-size model of the design guide, on an ImageNet-trained trunk whose
    # features are averaged over positions (docs/REAL_PHOTOS.md: on coco-mini's photographs this
    # retrieves far better than the CNN from scratch or the flatten head).
    "coco": dict(image_encoder="efficientnet_lite0", freeze_image_trunk=True, embedding_pooling="mean"),
    # The built-in shapes set: small images and narrow widths so a 2-core CPU trains it in minutes.
    "shapes": dict(
        image_size=56,
        encoder_width=16,
        decoder_width=16,
        proj_hidden_dim=512,
        freeze_bert=True,
        max_text_length=24,
        max_caption_length=32,
        caption_width=128,
        caption_layers=2,
        caption_heads=4,
        unet_width=64,
        unet_blocks=1,
        prediction_type="sample",
    ),
}
# The generalisation sets (docs/DESIGN.md): the same small model; shapes-holdout never trains on a
# fifth of the combinations, scenes shows two objects whose binding (which colour is which shape
# where) the model must get right.
MODEL_PRESETS["shapes-holdout"] = MODEL_PRESETS["shapes"]
# Two objects: the text embedding must say which colour goes with which shape and side. The
# frozen MiniLM's mean pool gives a caption and its swap cosine 0.97 (docs/DESIGN.md), so a
# trainable layer reads the token states in context first.
MODEL_PRESETS["scenes"] = MODEL_PRESETS["shapes"] | dict(text_context_layers=1, caption_position_std=1.0)

# Where each preset's data lives unless --data-dir says otherwise (relative to where train.py runs).
DEFAULT_DATA_DIRS = {
    "coco": "data/coco/coco2017", "shapes": "data/shapes", "shapes-holdout": "data/shapes-holdout",
    "scenes": "data/scenes",
}


def default_data_dir(preset: str) -> Path:
    """The folder a preset reads when no data folder is given."""
    return Path(DEFAULT_DATA_DIRS[preset])


def model_preset(name: str, **overrides: Any) -> ModelConfig:
    """The `ModelConfig` of a named preset (a key of MODEL_PRESETS), with field overrides."""
    if name not in MODEL_PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(MODEL_PRESETS)}")
    ModelConfig.check_names(overrides)
    return ModelConfig(**{**MODEL_PRESETS[name], **overrides})


@dataclass
class ShapesConfig(_Config):
    """What a built-in shapes set is drawn with (`python -m multimodal.data` has a flag for each field)."""

    num_train: int = option(6000, "training images")
    num_val: int = option(600, "validation images")
    image_size: int = option(MODEL_PRESETS["shapes"]["image_size"], "image side in pixels")
    seed: int = option(0, "seed of the size and position jitter")
    colors: str | None = option(
        None, "comma-separated colours to draw (red, green, blue, yellow, purple, cyan, orange); default: the six "
        "standard ones, so orange appears only when named"
    )
    holdout: bool = option(
        False, "keep a fifth of the combinations out of the training split (the shapes-holdout preset's set)"
    )

    def validate(self) -> None:
        for name in ("num_train", "num_val", "image_size"):
            _require(getattr(self, name) >= 1, name, f"must be at least 1, got {getattr(self, name)}")


# The modules that get LoRA adapters by default (ends of their names, or whole parts). Measured
# on the shapes demo checkpoint with an orange-only set (README, Fine-tuning): adapters on the
# caption decoder's attention, the image encoder or the image decoder taught them to see or
# say orange everywhere; the caption decoder learns a new word through its word rows instead.
LORA_TARGETS = ",".join((
    "qkv", "self_out", "cross_q", "cross_kv", "cross_out", "text_embedding", "film",  # the diffusion UNet
    "projection.0", "projection.2", "project.1", "project.3",  # the text and image embedding heads
    "embedding_to_latent.0", "embedding_to_latent.2",  # the fast path
))


@dataclass
class TrainConfig(_Config):
    """How a run trains: data, schedule, checkpoints, hardware. `train.py` has a flag for each field."""

    preset: str = option(
        "coco", "coco: COCO 2017 captions at 224 px; shapes: the built-in shapes set; shapes-holdout: the same "
        "with a fifth of its combinations never in training; scenes: two objects per picture (built-in sets "
        "are generated on first use)", group="data", choices=tuple(MODEL_PRESETS),
    )
    data_dir: str | None = option(
        None, "dataset folder (COCO, image folder, paired files, captions.txt) or WebDataset shards "
        "('shards/{000000..000099}.tar' or a folder of .tar) (default: data/coco/coco2017, or data/<preset> "
        "for a built-in set)", group="data",
    )
    data_format: str = option("auto", "layout of --data-dir; auto: detected from its files", group="data",
                              choices=DATA_FORMATS)
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
    epochs: int = option(20, "passes over the training images (the first stage when --diffusion-epochs is set)",
                         group="schedule")
    diffusion_epochs: int = option(
        0, "then train the diffusion UNet alone this many epochs, on the frozen encoders (0: all parts jointly)",
        group="schedule",
    )
    max_steps: int | None = option(None, "stop after this many optimiser steps, whatever the epochs", group="schedule")
    batch_size: int = option(64, "images per step and process (global batch: × processes × --grad-accum)",
                             group="schedule")
    grad_accum: int = option(1, "batches whose gradients add up to one optimiser step", group="schedule")
    learning_rate: float = option(2e-4, "peak learning rate (AdamW; linear warm-up, then cosine decay)",
                                  group="schedule", flag="--lr")
    diffusion_learning_rate: float | None = option(
        None, "peak learning rate of the diffusion stage (default: --lr)", group="schedule"
    )
    weight_decay: float = option(0.01, "AdamW weight decay", group="schedule")
    warmup_epochs: float = option(2.0, "epochs of linear learning-rate warm-up", group="schedule")
    max_grad_norm: float = option(1.0, "gradients are clipped to this norm", group="schedule")
    ema_decay: float = option(0.999, "decay of the weights' moving average, which generation uses", group="schedule")
    seed: int = option(0, "seed for the weights, the data order and the noise", group="schedule")

    output_dir: str = option("checkpoints", "where checkpoints, metrics and samples go", group="output")
    save_every: int = option(500, "steps between saves of latest/ (it is also saved at each epoch end)",
                             group="output")
    keep_last: int = option(0, "besides latest/, keep step_NNNNNNN/ copies of the last K saves", group="output")
    sample_every_epoch: bool = option(True, "write samples/epoch_NNN.png after each epoch", group="output")
    max_nonfinite_steps: int = option(20, "this many non-finite losses in a row stop the run", group="output")
    report_to: str = option(
        "none", "also log the losses, metrics, learning rate and sample sheets for TensorBoard, in "
        "<output-dir>/tensorboard/ (needs the tensorboard package)", group="output", choices=REPORT_TO,
    )
    log_every: int = option(50, "steps between logged training losses (their mean over those steps)", group="output")

    device: str = option("auto", "where to train; auto: CUDA when present", group="hardware",
                         choices=("auto", "cpu", "cuda"))
    precision: str = option(
        "auto", "auto: bf16 autocast on CUDA and on CPUs with native bf16 units, else fp32", group="hardware",
        choices=TRAIN_PRECISIONS,
    )
    compile: bool = option(False, "torch.compile the image encoder, image decoder and UNet (slow first steps)",
                           group="hardware")

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
        for name, least in (("epochs", 1), ("batch_size", 1), ("grad_accum", 1), ("save_every", 1),
                            ("max_nonfinite_steps", 1), ("log_every", 1), ("diffusion_epochs", 0), ("keep_last", 0),
                            ("text_cache_mb", 1), ("replay_images", 0), ("autoencoder_epochs", 0),
                            ("discriminator_start", 0), ("discriminator_width", 1)):
            value = getattr(self, name)
            wanted = "cannot be negative" if least == 0 else f"must be at least {least}"
            _require(value >= least, name, f"{wanted}, got {value}")
        _require(self.max_steps is None or self.max_steps >= 1, "max_steps", f"must be at least 1, got {self.max_steps}")
        _require(self.num_workers is None or self.num_workers >= 0, "num_workers",
                 f"cannot be negative, got {self.num_workers}")
        for name in ("learning_rate", "diffusion_learning_rate", "autoencoder_learning_rate"):
            value = getattr(self, name)
            _require(value is None or (value > 0 and math.isfinite(value)), name, f"must be above 0, got {value}")
        for name in ("weight_decay", "warmup_epochs", "perceptual_weight", "adversarial_weight"):
            _require(getattr(self, name) >= 0, name, f"cannot be negative, got {getattr(self, name)}")
        _require(self.max_grad_norm > 0, "max_grad_norm", f"must be above 0, got {self.max_grad_norm}")
        _require(0 <= self.ema_decay < 1, "ema_decay", f"must be in [0, 1), got {self.ema_decay}")
        _require(0 < self.val_fraction < 1, "val_fraction", f"must be in (0, 1), got {self.val_fraction}")
        for name in ("caption_column", "image_column"):
            _require(bool(getattr(self, name).strip()), name, "must not be empty")
        _require(self.lora_rank >= 0, "lora_rank", f"cannot be negative, got {self.lora_rank}")
        _require(self.lora_rank == 0 or self.init_from is not None, "lora_rank",
                 "needs --init-from CHECKPOINT: adapters fine-tune a trained model")
        _require(self.lora_alpha is None or self.lora_alpha > 0, "lora_alpha", f"must be above 0, got {self.lora_alpha}")
        _require(self.replay_images == 0 or self.init_from is not None, "replay_images",
                 "needs --init-from CHECKPOINT: replay keeps what a trained model knew")
        _require(self.replay_data is None or self.replay_images > 0, "replay_data",
                 "is read only with --replay-images N")
        _require(all(self.lora_targets_list), "lora_targets",
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


EMBEDDING_MAPS = ("pca", "tsne")  # how visualize.py lays the embeddings out in two dimensions


@dataclass
class VisualizeConfig(_Config):
    """What `visualize.py` draws from a training run; it has a flag for each field."""

    output_dir: str | None = option(None, "where the PNGs go (default: <run>/visualize/; files there are replaced)")
    data_dir: str | None = option(None, "data set whose validation split is drawn (default: the run's own)")
    prompt: str | None = option(None, "prompt of the denoising trajectory (default: the first validation caption)")
    num_images: int = option(8, "validation images shown beside their reconstructions")
    map_images: int = option(
        200, "validation images, with one caption each, for the latent statistics and the embedding map"
    )
    embedding_map: str = option(
        "pca", "how the embedding map is laid out: PCA, or t-SNE (slower; keeps neighbours, not distances)",
        choices=EMBEDDING_MAPS,
    )
    trajectory_frames: int = option(8, "denoising steps shown in the trajectory, spread over --steps")
    device: str = option("auto", "where to run; auto: CUDA when present", choices=("auto", "cpu", "cuda"))
    seed: int = option(0, "seed of the trajectory's starting noise")

    def validate(self) -> None:
        for name, least in (("num_images", 1), ("map_images", 3), ("trajectory_frames", 2)):
            value = getattr(self, name)
            _require(value >= least, name, f"must be at least {least}, got {value}")
        _require(self.prompt is None or bool(self.prompt.strip()), "prompt", "must not be empty")


@dataclass
class ServeConfig(_Config):
    """How `app.py` serves the web demo; it has a flag for each field."""

    host: str = option("127.0.0.1", "address to listen on (0.0.0.0: every network interface)")
    port: int = option(7860, "port to listen on")
    data_dir: str | None = option(
        None, "data set whose validation images give the examples and the search (default: the checkpoint's own)"
    )
    max_upload_mb: float = option(10.0, "largest file a visitor may upload, in megabytes")
    max_megapixels: float = option(25.0, "largest picture a visitor may upload, in millions of pixels")
    max_images: int = option(8, "most images one text→image request may ask for")
    max_captions: int = option(5, "most captions one image→text request may ask for")
    search_images: int = option(1000, "validation images the search tab ranks (the first N)")
    concurrency_limit: int = option(1, "requests the model works on at once; the others wait in the queue")
    queue_size: int = option(100, "requests that may wait; more are turned away with a message")

    def validate(self) -> None:
        _require(1 <= self.port <= 65535, "port", f"must be in 1..65535, got {self.port}")
        for name in ("max_upload_mb", "max_megapixels", "max_images", "max_captions", "search_images",
                     "concurrency_limit", "queue_size"):
            _require(getattr(self, name) > 0, name, f"must be above 0, got {getattr(self, name)}")


TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "coco": {},
    # Measured (docs/DESIGN.md, the README): joint epochs first, then diffusion alone on the
    # frozen encoder converges in fewer steps than training everything jointly; 2 + 3 epochs at
    # these widths meet every target on a 2-core CPU without bf16 units in under 6 minutes.
    "shapes": dict(
        preset="shapes", epochs=2, diffusion_epochs=3, batch_size=32, learning_rate=1e-3,
        diffusion_learning_rate=3e-3, warmup_epochs=0.25, ema_decay=0.995, cache_images=True,
    ),
}
# Two more diffusion epochs than the demo (about 40 s here): with 3, text→image of seen
# combinations reached 93.1% (goal 95%), with 5 99.3% (README).
TRAIN_PRESETS["shapes-holdout"] = TRAIN_PRESETS["shapes"] | dict(preset="shapes-holdout", diffusion_epochs=5)
# 10,000 pictures of two objects: more to learn than one shape, so more epochs of each stage (4 + 6
# train in about 10.5 minutes here; a fifth encoder epoch did not help, README). A random batch
# almost never holds a scene and its mirror: the hard negatives ask for the difference.
TRAIN_PRESETS["scenes"] = TRAIN_PRESETS["shapes"] | dict(
    preset="scenes", epochs=4, diffusion_epochs=6, hard_negatives=True
)


# How a preset's checkpoints draw by default (`ImageTextGenerator`, and so every command line):
# flags and arguments still override each field. The scenes preset's UNet gets both objects
# right in 40% of its pictures; best of 8, judged by the caption decoder, in 88% (README).
SAMPLING_PRESETS: dict[str, dict[str, Any]] = {"scenes": dict(num_candidates=8)}


def sampling_preset(name: str | None) -> SamplingConfig:
    """The `SamplingConfig` a checkpoint trained with preset `name` draws with (None, or a preset
    without its own: the defaults)."""
    return SamplingConfig(**SAMPLING_PRESETS.get(name or "", {}))


def sampling_presets() -> dict[str, dict[str, Any]]:
    """Each preset's sampling defaults (SamplingConfig fields), as `--help` lists them."""
    return {name: sampling_preset(name).to_dict() for name in TRAIN_PRESETS}


def train_preset(name: str, **overrides: Any) -> TrainConfig:
    """The `TrainConfig` of a named preset, with field overrides."""
    if name not in TRAIN_PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(TRAIN_PRESETS)}")
    TrainConfig.check_names(overrides)
    return TrainConfig(**{**TRAIN_PRESETS[name], **overrides})
