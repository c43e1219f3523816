"""A perceptual distance in the manner of LPIPS, over a frozen pretrained CNN's features.

LPIPS compares two pictures by their features at several depths of an ImageNet network: each
position's feature vector is normalised to unit length over the channels, the squared
differences are summed over the channels, averaged over the positions, and the depths added.
LPIPS then weighs the channels with weights learned from human judgements; we have none, so
every channel and every depth counts the same (the depths are averaged). A training-time
module: the network stays frozen and in eval mode, and is not part of any checkpoint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PerceptualDistance(nn.Module):
    """`features`: images in [-1, 1] → a list of feature maps (e.g. `EfficientNetFeatures`)."""

    def __init__(self, features: nn.Module) -> None:
        super().__init__()
        self.features = features.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "PerceptualDistance":
        """The network stays in eval mode (its BatchNorm statistics are ImageNet's)."""
        super().train(mode)
        self.features.eval()
        return self

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The mean distance between two batches of images in [-1, 1]; gradients reach `images`."""
        maps = self.features(torch.cat([images, targets]))
        distances = []
        for both in maps:
            a, b = F.normalize(both.float(), dim=1, eps=1e-10).chunk(2)
            distances.append((a - b).pow(2).sum(dim=1).mean())
        return torch.stack(distances).mean()
