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

    def forward(
        self,
        image_embeddings: torch.Tensor,
        text_embeddings: torch.Tensor,
        negative_embeddings: torch.Tensor | None = None,
        negative_valid: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Loss and in-batch top-1 accuracies for unit-norm embeddings of matching pairs.

        `negative_embeddings` (B, K, D): hard negatives of each pair's caption (NegCLIP), extra
        columns each image must rank below its own caption (where `negative_valid`, (B, K), is
        True); the text→image direction is unchanged, as a negative caption has no image."""
        if self.training:  # the global batch trains; evaluation (e.g. on rank 0 alone) stays local
            image_embeddings = gather_with_grad(image_embeddings)
            text_embeddings = gather_with_grad(text_embeddings)
            if negative_embeddings is not None:
                negative_embeddings = gather_with_grad(negative_embeddings)
                negative_valid = gather_with_grad(negative_valid.float()) > 0
        logits = self.logit_scale * image_embeddings.float() @ text_embeddings.float().t()
        labels = torch.arange(logits.shape[0], device=logits.device)
        image_logits = logits
        if negative_embeddings is not None:
            own = self.logit_scale * (image_embeddings.float()[:, None] * negative_embeddings.float()).sum(-1)
            image_logits = torch.cat([logits, own.masked_fill(~negative_valid, float("-inf"))], dim=1)
        loss = (F.cross_entropy(image_logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
        with torch.no_grad():
            i2t = (image_logits.argmax(dim=1) == labels).float().mean()
            t2i = (logits.argmax(dim=0) == labels).float().mean()
        return {"loss": loss, "i2t_accuracy": i2t, "t2i_accuracy": t2i}
