"""The CLIP-style contrastive loss: symmetric InfoNCE with a learnable temperature.

Under torch.distributed the batch is the global one: every process gathers all processes'
features with their gradients (open_clip's gather-with-grad), so 2 processes × batch B train
exactly like 1 process × batch 2B. With gradient accumulation the batch is every micro-batch's
too (`FeatureCache`, open_clip's --accum-freq), so accumulation 4 × B trains like 1 × 4B.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

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


Features = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]


@dataclass
class FeatureCache:
    """The contrastive features of every micro-batch of one optimiser step (open_clip's
    --accum-freq). While `live` is None the loss records each call's features (a first pass
    without gradients); then each micro-batch is computed again with gradients as slot `live`,
    and its features take that slot's place in a loss over all the slots. Each micro-batch's
    features get gradients in one pass only, so the passes' gradients add up to exactly those
    of the loss over the whole step's batch."""

    slots: list[Features] = field(default_factory=list)
    live: int | None = None

    def around(self, live: Features) -> Features:
        """Every slot's features in order, slot `live` replaced by `live` (with its gradients)."""
        slots = [*self.slots[: self.live], live, *self.slots[self.live + 1 :]]
        image, text, negatives, valid = zip(*slots)
        if negatives[0] is None:
            return torch.cat(image), torch.cat(text), None, None
        return torch.cat(image), torch.cat(text), torch.cat(negatives), torch.cat(valid)


class ContrastiveLoss(nn.Module):
    """Matching image–text pairs sit on the diagonal of the similarity matrix; the loss is
    the mean of the image→text and text→image cross-entropies over that matrix."""

    def __init__(self, init_logit_scale: float = 1 / 0.07, max_logit_scale: float = 100.0) -> None:
        super().__init__()
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(init_logit_scale)))
        self.max_logit_scale = max_logit_scale
        self.cache: FeatureCache | None = None  # while a step accumulates (`accumulating`)

    @contextmanager
    def accumulating(self, cache: FeatureCache) -> Iterator[FeatureCache]:
        """Compute the loss over `cache`'s micro-batches (recording them while `cache.live` is None)."""
        self.cache = cache
        try:
            yield cache
        finally:
            self.cache = None

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
        True); the text→image direction is unchanged, as a negative caption has no image.
        While a `FeatureCache` records, the features are stored and the loss is this batch's alone."""
        logit_scale, cache = self.logit_scale, self.cache
        features = (image_embeddings, text_embeddings, negative_embeddings, negative_valid)
        recording = cache is not None and cache.live is None
        if recording:
            cache.slots.append(tuple(None if f is None else f.detach() for f in features))
        elif cache is not None:
            image_embeddings, text_embeddings, negative_embeddings, negative_valid = cache.around(features)
            # Every pass computes the whole loss, and the temperature is live in each: each lets
            # 1/N of its gradient through, so that the N passes add up to its gradient once.
            logit_scale = logit_scale.detach() + (logit_scale - logit_scale.detach()) / len(cache.slots)
        if self.training and not recording:  # the global batch trains; evaluation (e.g. on rank 0 alone) stays local
            image_embeddings = gather_with_grad(image_embeddings)
            text_embeddings = gather_with_grad(text_embeddings)
            if negative_embeddings is not None:
                negative_embeddings = gather_with_grad(negative_embeddings)
                negative_valid = gather_with_grad(negative_valid.float()) > 0
        logits = logit_scale * image_embeddings.float() @ text_embeddings.float().t()
        labels = torch.arange(logits.shape[0], device=logits.device)
        image_logits = logits
        if negative_embeddings is not None:
            own = logit_scale * (image_embeddings.float()[:, None] * negative_embeddings.float()).sum(-1)
            image_logits = torch.cat([logits, own.masked_fill(~negative_valid, float("-inf"))], dim=1)
        loss = (F.cross_entropy(image_logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
        with torch.no_grad():
            i2t = (image_logits.argmax(dim=1) == labels).float().mean()
            t2i = (logits.argmax(dim=0) == labels).float().mean()
        return {"loss": loss, "i2t_accuracy": i2t, "t2i_accuracy": t2i}
