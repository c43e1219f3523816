"""Our caption decode loop gives transformers' generate()'s tokens, bit for bit, at fp32."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from multimodal.models import caption_decoding
from multimodal.models.caption_decoder import CaptionDecoder

BOS, EOS, PAD = 1, 2, 0
NEW_TOKENS = 12


def captioner(seed: int) -> CaptionDecoder:
    """A tiny decoder over 16 words whose random weights make each image's caption its own and
    end it at different steps: strong positions and cross-attention values, as training would give."""
    torch.manual_seed(seed)
    decoder = CaptionDecoder(tiny_config(), 16, BOS, EOS, PAD).eval()
    torch.nn.init.normal_(decoder.lm.transformer.wpe.weight, std=1.0)
    for block in decoder.lm.transformer.h:
        torch.nn.init.normal_(block.crossattention.c_attn.weight, std=0.3)
    return decoder


def latents(batch: int) -> torch.Tensor:
    return torch.randn(batch, 32, 7, 7) * 30


def ends(ids: torch.Tensor) -> list[int | None]:
    """The step at which each caption ended, None where it ran to the end."""
    return [int(row.nonzero()[0]) if row.any() else None for row in ids == EOS]


def both(decoder: CaptionDecoder, z: torch.Tensor, seed: int | None, **options) -> tuple[torch.Tensor, torch.Tensor]:
    """(our loop's ids, generate()'s ids), each from the same random state when `seed` is given."""
    assert caption_decoding.applies(options, decoder.training)  # else both would be generate()
    results = []
    for route in (decoder.generate, decoder.generate_with_transformers):
        if seed is not None:
            torch.manual_seed(seed)
        results.append(route(z, max_new_tokens=NEW_TOKENS, **options))
    return results[0], results[1]


@pytest.mark.parametrize("batch", [1, 4])
def test_greedy_matches_generate_with_captions_ending_at_different_steps(batch):
    decoder = captioner(6)
    torch.manual_seed(6)
    ours, reference = both(decoder, latents(batch), None)
    assert torch.equal(ours, reference)
    if batch > 1:
        assert len(set(ends(reference))) == batch  # three end at different steps, one runs to the end


def test_greedy_stops_when_every_caption_has_ended():
    decoder = captioner(12)
    torch.manual_seed(12)
    ours, reference = both(decoder, latents(3), None)
    assert torch.equal(ours, reference)
    assert reference.shape[1] < NEW_TOKENS and None not in ends(reference)


@pytest.mark.parametrize("batch", [1, 3])
def test_sampling_with_a_seed_matches_generate(batch):
    decoder = captioner(0)
    z = latents(batch)
    for options in (
        {"do_sample": True},  # generate()'s top_k of 50 is in force
        {"do_sample": True, "temperature": 0.7, "top_k": 6, "top_p": 0.9, "num_return_sequences": 2},
        {"do_sample": True, "repetition_penalty": 1.5, "no_repeat_ngram_size": 2, "min_new_tokens": 4},
    ):
        ours, reference = both(decoder, z, 7, **options)
        assert torch.equal(ours, reference), options
    assert ours.shape[0] == batch


def test_greedy_options_match_generate():
    decoder = captioner(0)
    z = latents(3)
    for options in (
        {"repetition_penalty": 1.3, "no_repeat_ngram_size": 2},
        {"min_new_tokens": 9},
        {"min_length": 7, "length_penalty": 2.0},  # min_length counts [CLS]; length_penalty is for beams
    ):
        ours, reference = both(decoder, z, None, **options)
        assert torch.equal(ours, reference), options
    assert all(end is None or end >= 6 for end in ends(reference))


def test_beams_training_and_other_options_stay_on_generate():
    assert not caption_decoding.applies({"num_beams": 3}, training=False)
    assert not caption_decoding.applies({}, training=True)
    assert not caption_decoding.applies({"use_cache": False}, training=False)
    assert not caption_decoding.applies({"bad_words_ids": [[5]]}, training=False)
    assert not caption_decoding.applies({"num_return_sequences": 2}, training=False)  # greedy: generate() refuses
    decoder = captioner(0)
    z = latents(2)
    assert torch.equal(decoder.generate(z, num_beams=3), decoder.generate_with_transformers(z, num_beams=3))
