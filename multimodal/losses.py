"""The CLIP-style contrastive loss: symmetric InfoNCE with a learnable temperature.

Under torch.distributed the batch is the global one: every process gathers all processes'
features with their gradients (open_clip's gather-with-grad), so 2 processes × batch B train
exactly like 1 process × batch 2B.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.nn.functional import all_gather


def gather_with_grad(features: torch.Tensor) -> torch.Tensor:
    """All processes' features in rank order; gradients flow back to the process that made them.

    Every process then computes the same full loss; the all-gather's backward sums the
    gradients of those copies, and DDP's averaging divides the sum again, which leaves
    exactly the gradient of the one global loss.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return features
    return torch.cat(all_gather(features), dim=0)


class ContrastiveLoss(nn.Module):
    """Matching image–text pairs sit on the diagonal of the similarity matrix; the loss is
    the mean of the image→text and text→image cross-entropies over that matrix."""

    def __init__(self, init_logit_scale: float = 1 / 0.07, max_logit_scale: float = 100.0) -> None:
        super().__init__()
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(init_logit_scale)))
        self.max_logit_scale = max_logit_scale

    @property
    def logit_scale(self) -> torch.Tensor:
        """1/τ, clamped at `max_logit_scale` as in CLIP so the logits cannot explode."""
        return self.log_logit_scale.exp().clamp(max=self.max_logit_scale)

    def forward(self, image_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss and in-batch top-1 accuracies for unit-norm embeddings of matching pairs."""
        if self.training:  # the global batch trains; evaluation (e.g. on rank 0 alone) stays local
            image_embeddings = gather_with_grad(image_embeddings)
            text_embeddings = gather_with_grad(text_embeddings)
        logits = self.logit_scale * image_embeddings.float() @ text_embeddings.float().t()
        labels = torch.arange(logits.shape[0], device=logits.device)
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
        with torch.no_grad():
            i2t = (logits.argmax(dim=1) == labels).float().mean()
            t2i = (logits.argmax(dim=0) == labels).float().mean()
        return {"loss": loss, "i2t_accuracy": i2t, "t2i_accuracy": t2i}
