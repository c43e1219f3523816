"""Generation in both directions: text→image sampling and image→text decoding."""

from __future__ import annotations

import time
from typing import Callable

import torch

from bench.timing import Timer, count_flops, precision_name
from multimodal import GenerativeMultimodalModel, SamplingConfig
from multimodal.captions import token_ids
from multimodal.data import all_combinations, canonical_caption
from multimodal.data.shapes import captions_for
from multimodal.device import autocast

NEW_TOKENS = 32


def prompts(count: int) -> list[str]:
    return [canonical_caption(spec) for spec in all_combinations()[:count]]


def shapes_words(model: GenerativeMultimodalModel) -> list[int]:
    """The token ids of every caption of the shapes set: the vocabulary a decoder trained on it writes."""
    return token_ids(model.tokenizer, (caption for spec in all_combinations() for caption in captions_for(spec)))


def bench_text_to_image(
    model: GenerativeMultimodalModel, dtype: torch.dtype | None, batches: list[int], steps: int, timer: Timer,
    compiled: bool = False,
) -> list[dict]:
    """ms per image of DDIM sampling (BERT, `steps` UNet steps, the image decoder), with
    classifier-free guidance (scale 3: one forward of twice the batch) and without (scale 1);
    the FLOPs of a picture, and how long its UNet calls take alone, to say what bounds it.
    At batch 1 with guidance, also on one thread and (`compiled`) with the UNet compiled by
    torch.compile (inductor, weights frozen): how much of a step is per-operation overhead."""
    rows = []
    for batch in batches:
        texts = prompts(batch)
        for guidance in (3.0, 1.0):
            sampling = SamplingConfig(num_inference_steps=steps, guidance_scale=guidance)

            def sample() -> None:
                with autocast(model.device, dtype):
                    model.generate_image_from_text(texts, sampling, torch.Generator().manual_seed(0))

            row = {"batch": batch, "steps": steps, "guidance": guidance, "precision": precision_name(dtype),
                   "ms_per_image": timer(sample) * 1e3 / batch, "gflop_per_image": count_flops(sample) / 1e9 / batch,
                   "unet_ms_per_image": timer(unet_calls(model, texts, sampling, dtype)) * 1e3 / batch}
            if batch == 1 and guidance != 1.0:
                threads = torch.get_num_threads()
                torch.set_num_threads(1)
                try:
                    row["one_thread_ms_per_image"] = timer(sample) * 1e3
                finally:
                    torch.set_num_threads(threads)
                if compiled:
                    row |= compiled_sampling(model, sample, timer)
            rows.append(row)
    return rows


def unet_calls(model: GenerativeMultimodalModel, texts: list[str], sampling: SamplingConfig,
               dtype: torch.dtype | None) -> Callable[[], None]:
    """The UNet calls of one sampling run alone (same inputs each step): the rest of a picture is
    BERT, the scheduler's arithmetic and the image decoder."""
    diffusion = model.diffusion
    with torch.no_grad(), autocast(model.device, dtype):
        condition = diffusion.guidance_condition(model.text_condition(texts), sampling.guidance_scale)
        memory = diffusion.unet.remember(*condition)  # once, as the sampling loop does
    latent = torch.randn(memory.text.shape[0], model.config.latent_channels, model.config.latent_size,
                         model.config.latent_size, device=model.device)
    t = torch.full((len(latent),), 500, device=model.device)

    @torch.no_grad()
    def run() -> None:
        with autocast(model.device, dtype):
            for _ in range(sampling.num_inference_steps):
                diffusion.unet(latent, t, memory=memory)

    return run


def compiled_sampling(model: GenerativeMultimodalModel, sample: Callable[[], None], timer: Timer) -> dict:
    """`sample` with the UNet compiled (inductor, frozen weights): its first call and then ms per
    image; the eager UNet is put back after. Where inductor cannot build (no C++ compiler), why."""
    eager = model.diffusion.unet
    try:
        model.diffusion.unet = torch.compile(eager, options={"freezing": True})
        start = time.perf_counter()
        sample()
        first_s = time.perf_counter() - start
        return {"compiled_first_call_s": first_s, "compiled_ms_per_image": timer(sample) * 1e3}
    except Exception as error:  # inductor's failures are of many kinds; the row says which
        return {"compiled_error": f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"}
    finally:
        model.diffusion.unet = eager


def decode(model: GenerativeMultimodalModel, z: torch.Tensor, beams: int, use_cache: bool, loop: bool = False) -> None:
    """Exactly NEW_TOKENS new tokens per caption by transformers' generate() (the route of every
    caption before our decode loop), or with `loop` by the route generate_text_from_image takes:
    our loop for greedy, generate() for beams."""
    decoder = model.caption_decoder
    route = decoder.generate if loop else decoder.generate_with_transformers
    route(z, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, num_beams=beams, use_cache=use_cache)


def matmuls_only(model: GenerativeMultimodalModel, rows: int) -> Callable[[], None]:
    """NEW_TOKENS tokens' worth of the caption decoder's matrix products at `rows` rows and nothing
    else: the bound of any decode loop over every word. At batch 1 each token reads every weight
    once (the output layer alone is 30,522 × width), so this is memory traffic more than arithmetic."""
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
            lm.word_logits(hidden)

    return run


@torch.no_grad()
def bench_image_to_text(
    model: GenerativeMultimodalModel, dtype: torch.dtype | None, batches: list[int], timer: Timer
) -> list[dict]:
    """New tokens per second of the caption decoder (the image encoder runs once, outside the
    timing) by transformers' generate(), greedy and 3-beam, with the key/value cache and without
    it. Greedy with the cache also by our decode loop (`loop_tokens_per_s`: the route captions take
    now, the same tokens), by its matrix products alone (`matmul_tokens_per_s`: its bound), and by
    our loop with the vocabulary cut to the shapes set's words (`narrow_loop_tokens_per_s`: a
    decoder trained on those captions computes only their rows of the output layer)."""
    model.eval()
    lm = model.caption_decoder.lm
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
                    lm.set_vocabulary(shapes_words(model))
                    try:
                        row["narrow_words"] = len(lm.words)
                        row["narrow_loop_tokens_per_s"] = timed(lambda: decode(model, z, beams, use_cache, loop=True))
                    finally:
                        lm.set_vocabulary(None)
                rows.append(row)
    return rows
