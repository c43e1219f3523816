"""Generation in both directions: text→image sampling and image→text decoding."""

from __future__ import annotations

import torch

from bench.timing import Timer, precision_name
from multimodal import GenerativeMultimodalModel, SamplingConfig
from multimodal.data import all_combinations, canonical_caption
from multimodal.device import autocast

NEW_TOKENS = 32


def prompts(count: int) -> list[str]:
    return [canonical_caption(spec) for spec in all_combinations()[:count]]


def bench_text_to_image(
    model: GenerativeMultimodalModel, dtype: torch.dtype | None, batches: list[int], steps: int, timer: Timer
) -> list[dict]:
    """ms per image of DDIM sampling (BERT, `steps` UNet steps, the image decoder), with
    classifier-free guidance (scale 3: one forward of twice the batch) and without (scale 1)."""
    rows = []
    for batch in batches:
        texts = prompts(batch)
        for guidance in (3.0, 1.0):

            def sample() -> None:
                with autocast(model.device, dtype):
                    sampling = SamplingConfig(num_inference_steps=steps, guidance_scale=guidance)
                    model.generate_image_from_text(texts, sampling, torch.Generator().manual_seed(0))

            seconds = timer(sample)
            rows.append(
                {"batch": batch, "steps": steps, "guidance": guidance, "precision": precision_name(dtype),
                 "ms_per_image": seconds * 1e3 / batch}
            )
    return rows


def decode(model: GenerativeMultimodalModel, z: torch.Tensor, beams: int, use_cache: bool) -> None:
    """Exactly NEW_TOKENS new tokens per caption, through the route generate_text_from_image takes."""
    model.caption_decoder.generate(
        z, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, num_beams=beams, use_cache=use_cache
    )


@torch.no_grad()
def bench_image_to_text(
    model: GenerativeMultimodalModel, dtype: torch.dtype | None, batches: list[int], timer: Timer
) -> list[dict]:
    """New tokens per second of the caption decoder (the image encoder runs once, outside the
    timing), greedy and 3-beam, with the key/value cache and without it."""
    model.eval()
    size = model.config.image_size
    rows = []
    for batch in batches:
        images = torch.rand(batch, 3, size, size, device=model.device) * 2 - 1
        with autocast(model.device, dtype):
            z = model.image_encoder.encode(images)
        for beams in (1, 3):
            for use_cache in (True, False):

                def run() -> None:
                    with autocast(model.device, dtype):
                        decode(model, z, beams, use_cache)

                seconds = timer(run)
                rows.append(
                    {"batch": batch, "beams": beams, "cache": use_cache, "new_tokens": NEW_TOKENS,
                     "precision": precision_name(dtype), "tokens_per_s": batch * NEW_TOKENS / seconds}
                )
    return rows
