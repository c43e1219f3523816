"""The frozen-BERT text cache over a large synthetic caption set: peak memory, capped and not.

Each configuration runs in a fresh (spawned) process, so its peak RSS (VmHWM) is its own.
BERT has the bundled MiniLM's width (384) but one layer and random weights: what the cache
holds depends only on the width and each caption's length, and one layer keeps it quick.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

import torch

from bench.timing import peak_rss_mb
from multimodal.config import ModelConfig, train_preset
from multimodal.models.text_encoder import TextEncoder
from multimodal.training.text_cache import TextFeatureCache

BATCH = 256
ONE_LAYER_MINILM = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=1, num_attention_heads=6,
                        intermediate_size=64, max_position_embeddings=64)
COLOURS = ("red", "green", "blue", "white", "black", "yellow", "brown", "grey")
THINGS = ("dog", "bus", "man", "woman", "cat", "pizza", "train", "kite", "boat", "horse")


def caption(i: int) -> str:
    """A distinct, COCO-like caption (about 14 tokens) for each i."""
    return (f"a {COLOURS[i % 8]} {THINGS[i // 8 % 10]} standing next to a {THINGS[i // 80 % 10]} "
            f"in picture number {i}")


def measure_cache(captions: int, cap_mb: int | None) -> dict:
    torch.manual_seed(0)
    encoder = TextEncoder(ModelConfig(bert_config=ONE_LAYER_MINILM, freeze_bert=True))
    cache = TextFeatureCache(encoder, cap_mb * 2**20 if cap_mb else None)
    before = peak_rss_mb()
    start = time.perf_counter()
    for first in range(0, captions, BATCH):
        texts = [caption(i) for i in range(first, min(first + BATCH, captions))]
        tokens = encoder.tokenize(texts)
        cache.states(texts, tokens["input_ids"], tokens["attention_mask"])
    return {"captions": captions, "cap_mb": cap_mb, "cache_mb": cache.bytes / 2**20, "cached": len(cache.store),
            "evicted": cache.evicted, "rss_before_mb": before, "peak_rss_mb": peak_rss_mb(),
            "seconds": time.perf_counter() - start}


def bench_text_cache(captions: int) -> list[dict]:
    """Unbounded, at the trainer's default cap, and at a quarter of it; each in a fresh process."""
    default_mb = train_preset("coco").text_cache_mb
    rows = []
    for cap_mb in (None, default_mb, default_mb // 4):
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows.append(pool.submit(measure_cache, captions, cap_mb).result())
    return rows
