"""Caching what a frozen function of the images computes: a frozen image encoder's latent, or a
frozen pretrained trunk's features, per image, so that later epochs never run it again (the text
side's counterpart is `multimodal.training.text_cache`)."""

from __future__ import annotations

from collections.abc import Callable

import torch


class LatentCache:
    """What a frozen function of the images computes, per training image, once: the image
    encoder's latent z for stages that do not train the encoder (the diffusion stage), or a
    frozen pretrained trunk's features while the parts after it learn; on data sets small enough
    to keep in memory. Like the text cache, it serves every batch from the cache, the first one too."""

    def __init__(self, compute: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.compute = compute
        self.store: dict[int, torch.Tensor] = {}

    @torch.no_grad()
    def latents(self, image_ids: list[int], images: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) latents for a batch of images, on the images' device."""
        missing = [i for i, image_id in enumerate(image_ids) if image_id not in self.store]
        if missing:
            computed = self.compute(images[missing])
            for row, i in enumerate(missing):
                self.store[image_ids[i]] = computed[row].to("cpu", torch.float16)
        # Stacked outside autocast: CPU autocast refuses float16 inputs to torch.stack.
        with torch.autocast(images.device.type, enabled=False):
            return torch.stack([self.store[image_id] for image_id in image_ids]).to(images.device).float()
