"""Image decoder: the latent z (256×7×7) back to pixels, and the fast path from an embedding."""

from __future__ import annotations

import torch
from torch import nn

from multimodal.config import ModelConfig, num_stride2_stages
from multimodal.models.image_encoder import ResidualBlock, group_norm, run_checkpointed, stage_widths


class ImageDecoder(nn.Module):
    """A transposed CNN mirroring the encoder: k stages that each double the resolution.
    The last stage has no residual block: at full resolution it would cost more than the
    rest of the decoder together (measured in bench/), for little gain."""

    gradient_checkpointing = False  # set by set_gradient_checkpointing

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        k = num_stride2_stages(config.image_size, config.latent_size)
        widths = stage_widths(config.decoder_width, k, config.latent_channels)[::-1]
        layers: list[nn.Module] = []
        self.stage_starts: list[int] = []  # where each stage begins in `layers`, for checkpointing
        in_channels = config.latent_channels
        for i, width in enumerate(widths):
            self.stage_starts.append(len(layers))
            layers += [nn.ConvTranspose2d(in_channels, width, 4, stride=2, padding=1), group_norm(width), nn.SiLU()]
            if i < k - 1:
                layers.append(ResidualBlock(width))
            in_channels = width
        layers += [nn.Conv2d(in_channels, 3, 3, padding=1), nn.Tanh()]
        self.layers = nn.Sequential(*layers)

        # The fast path: embedding → a small spatial map → the full latent.
        hidden = config.pool_channels
        self.latent_shape = (hidden, config.latent_size, config.latent_size)
        self.embedding_to_latent = nn.Sequential(
            nn.Linear(config.embed_dim, config.proj_hidden_dim),
            nn.GELU(),
            nn.Linear(config.proj_hidden_dim, hidden * config.latent_size**2),
            nn.Unflatten(1, self.latent_shape),
            nn.Conv2d(hidden, config.latent_channels, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(config.latent_channels, config.latent_channels, 1),
        )

    def decode_from_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Latent (B, 256, 7, 7) → images (B, 3, H, W) in [-1, 1]."""
        if not self.gradient_checkpointing:
            return self.layers(z)
        ends = [*self.stage_starts[1:], len(self.layers)]  # the last stage draws the pixels too
        return run_checkpointed([self.layers[start:end] for start, end in zip(self.stage_starts, ends)], z)

    def set_gradient_checkpointing(self, on: bool) -> None:
        """Each stage keeps only its input for the backward pass (models/checkpointing.py): at 224 px
        its activations are most of what a training step keeps."""
        self.gradient_checkpointing = on

    @property
    def last_layer(self) -> torch.Tensor:
        """The weight of the convolution that draws the pixels: where the autoencoder stage
        compares the gradients of its reconstruction and adversarial losses."""
        return self.layers[-2].weight

    def get_latent_from_embedding(self, embedding: torch.Tensor) -> torch.Tensor:
        """A unit embedding (B, embed_dim) → a latent the decoder can draw, without diffusion."""
        return self.embedding_to_latent(embedding)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decode_from_latent(z)
