"""An exponential moving average of the weights: what generation uses."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ExponentialMovingAverage:
    """A copy of the model whose weights trail the trained ones: ema ← d·ema + (1 − d)·θ.

    Only trainable parameters are averaged (a frozen BERT keeps its values anyway, and skipping
    it saves most of the work); buffers such as the latent statistics are copied. The decay
    warms up as (1 + step) / (10 + step), so a short run's average is not stuck at the start.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        pairs = [(e, p) for e, p in zip(self.module.parameters(), model.parameters()) if p.requires_grad]
        if pairs:
            averaged, trained = zip(*pairs)
            torch._foreach_lerp_(list(averaged), list(trained), 1 - decay)
        for averaged_buffer, buffer in zip(self.module.buffers(), model.buffers()):
            averaged_buffer.copy_(buffer)
