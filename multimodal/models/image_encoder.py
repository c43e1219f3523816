"""Image encoder: pixels → spatial latent z (256×7×7) → unit-norm embedding e_img.

z keeps every pixel's detail for the decoder and the diffusion model; the embedding head
keeps what a caption can say. Each has its own head so the two goals do not fight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from multimodal.config import ModelConfig, num_stride2_stages
from multimodal.models.checkpointing import checkpointed
from multimodal.models.pretrained import FEATURE_CHANNELS, EfficientNetFeatures
from multimodal.models.latent_regularizer import Terms, latent_regularizer
from multimodal.models.weights import read_safetensors


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups: independent of the batch, so DDP and tiny batches agree."""
    groups = next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class ResidualBlock(nn.Module):
    """Two 3×3 convolutions with a skip: depth without losing the gradient."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            group_norm(channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            group_norm(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x + self.body(x))


def stage_widths(base: int, num_stages: int, max_width: int) -> list[int]:
    """Channel widths that double per stage, capped at `max_width`."""
    return [min(base * 2**i, max_width) for i in range(num_stages)]


def run_checkpointed(stages: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """`x` through each stage in turn, each keeping only its input for the backward pass
    (models/checkpointing.py). The stages are sliced from the layers at each call, so they are
    always the layers the model has (LoRA replaces some)."""
    for stage in stages:
        x = checkpointed(stage, x)
    return x


STAGE_LAYERS = 4  # a SimpleCNN stage: strided conv, norm, SiLU, residual block


class SimpleCNN(nn.Module):
    """k stride-2 stages (k = log2 of the downsampling factor, image_size / latent_size), each a strided
    conv and a residual block."""

    gradient_checkpointing = False  # set by ImageEncoder.set_gradient_checkpointing

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        k = num_stride2_stages(config.image_size, config.latent_size)
        widths = stage_widths(config.encoder_width, k, config.latent_channels)
        layers: list[nn.Module] = []
        in_channels = 3
        for width in widths:
            layers += [
                nn.Conv2d(in_channels, width, 3, stride=2, padding=1),
                group_norm(width),
                nn.SiLU(),
                ResidualBlock(width),
            ]
            in_channels = width
        layers.append(nn.Conv2d(in_channels, config.latent_channels, 1))
        self.layers = nn.Sequential(*layers)  # flat, as checkpoints name the layers

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not self.gradient_checkpointing:
            return self.layers(images)
        starts = range(0, len(self.layers) - 1, STAGE_LAYERS)  # each stride-2 stage, then the 1×1 conv
        return run_checkpointed([*(self.layers[i : i + STAGE_LAYERS] for i in starts), self.layers[-1]], images)


class ResNetTrunk(nn.Module):
    """torchvision ResNet-50 without its classifier, then a 1×1 conv to the latent channels."""

    gradient_checkpointing = False

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        from torchvision.models import resnet50

        resnet = resnet50(weights=None)
        if config.resnet_weights:
            resnet.load_state_dict(read_safetensors(config.resnet_weights), strict=False)
        self.trunk = nn.Sequential(*list(resnet.children())[:-2])
        self.pool = nn.AdaptiveAvgPool2d(config.latent_size)
        self.to_latent = nn.Conv2d(2048, config.latent_channels, 1)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """What the 1×1 conv reads: 2048 channels at the latent's size. Checkpointed, stage by
        stage: the stem (conv, norm, ReLU, max pool), then each of the four layers of bottlenecks."""
        if not self.gradient_checkpointing:
            return self.pool(self.trunk(images))
        return self.pool(run_checkpointed([self.trunk[:4], *self.trunk[4:]], images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.to_latent(self.features(images))


class EfficientNetTrunk(nn.Module):
    """EfficientNet-Lite0 with its ImageNet weights (models/pretrained.py): its last map, 1280
    channels at stride 32 (7×7 at 224 px), then a 1×1 conv to the latent channels. The trunk's
    weights are saved with the rest of the model (a fine-tuned trunk differs from the package's)."""

    gradient_checkpointing = False

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.trunk = EfficientNetFeatures(pretrained=True)
        self.to_latent = nn.Conv2d(FEATURE_CHANNELS, config.latent_channels, 1)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """What the 1×1 conv reads: the trunk's last map. Checkpointed, stage by stage (the
        trunk's other maps, which only a perceptual loss reads, are not made)."""
        if not self.gradient_checkpointing:
            return self.trunk(images)[-1]
        return run_checkpointed([self.trunk.stem, *self.trunk.blocks, self.trunk.head], images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.to_latent(self.features(images))


BACKBONES = {"simple_cnn": SimpleCNN, "resnet50": ResNetTrunk, "efficientnet_lite0": EfficientNetTrunk}


class EmbeddingHead(nn.Module):
    """z → unit vector. By default a 1×1 conv and a flatten instead of average pooling: where an
    object lies ("on the left") must survive into the embedding. With `embedding_pooling` mean,
    the average over positions: on a few thousand photographs the flatten's weights overfit."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.embedding_pooling == "mean":
            self.reduce: nn.Module = nn.AdaptiveAvgPool2d(1)
            flat = config.latent_channels
        else:
            self.reduce = nn.Conv2d(config.latent_channels, config.pool_channels, 1)
            flat = config.pool_channels * config.latent_size**2
        self.project = nn.Sequential(
            nn.LayerNorm(flat),
            nn.Linear(flat, config.proj_hidden_dim),
            nn.GELU(),
            nn.Linear(config.proj_hidden_dim, config.embed_dim),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.project(self.reduce(z).flatten(1)), dim=-1)


# The parameters of the latent path, images → z (what the autoencoder stage trains of the encoder).
LATENT_PATH = ("image_encoder.backbone.", "image_encoder.regularizer.")


class ImageEncoder(nn.Module):
    """images in [-1, 1] → (z, e_img). The backbone's features become z through the latent
    regulariser (`config.latent_regularizer`)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.backbone = BACKBONES[config.image_encoder](config)
        self.regularizer = latent_regularizer(config)
        self.head = EmbeddingHead(config)
        self.frozen_trunk = config.freeze_image_trunk and hasattr(self.backbone, "trunk")
        if self.frozen_trunk:
            self.backbone.trunk.requires_grad_(False).eval()  # no optimiser state, fixed BatchNorm statistics

    def train(self, mode: bool = True) -> "ImageEncoder":
        """A frozen trunk stays in eval mode: BatchNorm keeps its ImageNet statistics."""
        super().train(mode)
        if self.frozen_trunk:
            self.backbone.trunk.eval()
        return self

    def set_gradient_checkpointing(self, on: bool) -> None:
        """Checkpoint the backbone's stages (models/checkpointing.py); a training setting."""
        self.backbone.gradient_checkpointing = on

    def latent(self, images: torch.Tensor, trunk_features: torch.Tensor | None = None) -> tuple[torch.Tensor, Terms]:
        """z and the regulariser's terms (its loss, codebook statistics); from `trunk_features`
        (what `trunk_features(images)` gave) when the caller cached them."""
        features = self.backbone(images) if trunk_features is None else self.backbone.to_latent(trunk_features)
        return self.regularizer(features)

    def encode(self, images: torch.Tensor, trunk_features: torch.Tensor | None = None) -> torch.Tensor:
        """The spatial latent z: (B, latent_channels, latent_size, latent_size)."""
        return self.latent(images, trunk_features)[0]

    @torch.no_grad()
    def trunk_features(self, images: torch.Tensor) -> torch.Tensor:
        """A frozen pretrained trunk's output, which never changes for an image: cacheable."""
        return self.backbone.features(images)

    def embed(self, z: torch.Tensor) -> torch.Tensor:
        """The unit-norm image embedding from a latent."""
        return self.head(z)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(images)
        return z, self.embed(z)
