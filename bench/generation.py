"""Generation in both directions: text→image sampling and image→text decoding."""

from __future__ import annotations

from typing import Callable

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


def decode(model: GenerativeMultimodalModel, z: torch.Tensor, beams: int, use_cache: bool, loop: bool = False) -> None:
    """Exactly NEW_TOKENS new tokens per caption by transformers' generate() (the route of every
    caption before our decode loop), or with `loop` by the route generate_text_from_image takes:
    our loop for greedy, generate() for beams."""
    decoder = model.caption_decoder
    route = decoder.generate if loop else decoder.generate_with_transformers
    route(z, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, num_beams=beams, use_cache=use_cache)


def matmuls_only(model: GenerativeMultimodalModel, rows: int) -> Callable[[], None]:
    """NEW_TOKENS tokens' worth of the caption decoder's matrix products at `rows` rows and nothing
    else: the bound of any decode loop. At batch 1 each token reads every weight once (the output
    layer alone is 30,522 × width), so this is memory traffic more than arithmetic."""
    lm = model.caption_decoder.lm
    layers = [layer for block in lm.transformer.h for layer in (
        block.attn.c_attn, block.attn.c_proj, block.crossattention.q_attn, block.crossattention.c_proj,
        block.mlp.c_fc, block.mlp.c_proj)]
    inputs = [torch.randn(rows, 1, layer.weight.shape[0], device=model.device) for layer in layers]
    hidden = torch.randn(rows, 1, lm.config.n_embd, device=model.device)

    def run() -> None:
        for _ in range(NEW_TOKENS):
            for layer, x in zip(layers, inputs):
                layer(x)
            lm.lm_head(hidden)

    return run


@torch.no_grad()
def bench_image_to_text(
    model: GenerativeMultimodalModel, dtype: torch.dtype | None, batches: list[int], timer: Timer
) -> list[dict]:
    """New tokens per second of the caption decoder (the image encoder runs once, outside the
    timing) by transformers' generate(), greedy and 3-beam, with the key/value cache and without
    it. Greedy with the cache also by our decode loop (`loop_tokens_per_s`: the route captions take
    now, the same tokens) and by its matrix products alone (`matmul_tokens_per_s`: its bound)."""
    model.eval()
    size = model.config.image_size
    rows = []
    for batch in batches:
        images = torch.rand(batch, 3, size, size, device=model.device) * 2 - 1
        with autocast(model.device, dtype):
            z = model.image_encoder.encode(images)

        def timed(fn: Callable[[], None]) -> float:
            def run() -> None:
                with autocast(model.device, dtype):
                    fn()

            return batch * NEW_TOKENS / timer(run)

        for beams in (1, 3):
            for use_cache in (True, False):
                row = {"batch": batch, "beams": beams, "cache": use_cache, "new_tokens": NEW_TOKENS,
                       "precision": precision_name(dtype),
                       "tokens_per_s": timed(lambda: decode(model, z, beams, use_cache))}
                if beams == 1 and use_cache:
                    row["loop_tokens_per_s"] = timed(lambda: decode(model, z, beams, use_cache, loop=True))
                    row["matmul_tokens_per_s"] = timed(matmuls_only(model, batch))
                rows.append(row)
    return rows
