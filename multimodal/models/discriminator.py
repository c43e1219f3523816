"""The PatchGAN discriminator of the autoencoder stage (pix2pix's, as taming-transformers and
latent diffusion use it): a logit per overlapping patch of the picture, real or drawn.

A training-time module: the trainer keeps it (and its optimiser) for resuming, and generation
never needs it. GroupNorm rather than BatchNorm, like the rest of the model: independent of
the batch, so a small or uneven batch trains the same.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from multimodal.models.image_encoder import group_norm


class PatchDiscriminator(nn.Module):
    """`layers` stride-2 convolutions that double the width (up to 8×), then two stride-1
    ones: at 112 px, a 12×12 map of logits, each judging a 70×70 patch."""

    def __init__(self, width: int = 64, layers: int = 3) -> None:
        super().__init__()
        modules: list[nn.Module] = [nn.Conv2d(3, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        channels = width
        for i in range(1, layers + 1):
            out = width * min(2**i, 8)
            stride = 2 if i < layers else 1
            modules += [nn.Conv2d(channels, out, 4, stride=stride, padding=1, bias=False), group_norm(out),
                        nn.LeakyReLU(0.2)]
            channels = out
        modules.append(nn.Conv2d(channels, 1, 4, stride=1, padding=1))
        self.layers = nn.Sequential(*modules)
        for module in self.modules():  # pix2pix's initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
            elif isinstance(module, nn.GroupNorm):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] → (B, 1, h, w) logits, positive for "real"."""
        return self.layers(images)


def hinge_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss: real logits pushed above 1, fake ones below −1."""
    return 0.5 * (F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean())
