"""Our caption decode loop gives transformers' generate()'s tokens, bit for bit, at fp32, over every
word and over a narrower vocabulary, which every route writes alone."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from multimodal.models import caption_decoding
from multimodal.models.caption_decoder import CaptionDecoder

BOS, EOS, PAD, UNK = 1, 2, 0, 3
NEW_TOKENS = 12
WORDS = (5, 6, 9, 10, 13)  # a vocabulary narrower than the 16 ids: what training on captions sets
VOCABULARIES = [None, WORDS]  # every word, and those


def captioner(seed: int, vocabulary: tuple[int, ...] | None = None) -> CaptionDecoder:
    """A tiny decoder over 16 words whose random weights make each image's caption its own and
    end it at different steps: strong positions and cross-attention values, as training would
    give. It writes the words of `vocabulary` (and the special tokens), None: all 16."""
    torch.manual_seed(seed)
    decoder = CaptionDecoder(tiny_config(), 16, BOS, EOS, PAD, UNK).eval()
    torch.nn.init.normal_(decoder.lm.transformer.wpe.weight, std=1.0)
    for block in decoder.lm.transformer.h:
        torch.nn.init.normal_(block.crossattention.c_attn.weight, std=0.3)
    decoder.lm.set_vocabulary(vocabulary)
    return decoder


def written(ids: torch.Tensor, vocabulary: tuple[int, ...] | None) -> bool:
    """Whether every id is a word of `vocabulary` or a special token (always true for None)."""
    return vocabulary is None or set(ids.flatten().tolist()) <= {*vocabulary, BOS, EOS, PAD, UNK}


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


@pytest.mark.parametrize("vocabulary", VOCABULARIES)
@pytest.mark.parametrize("batch", [1, 4])
def test_greedy_matches_generate_with_captions_ending_at_different_steps(batch, vocabulary):
    decoder = captioner(6, vocabulary)
    torch.manual_seed(6)
    ours, reference = both(decoder, latents(batch), None)
    assert torch.equal(ours, reference)
    assert written(ours, vocabulary)
    if batch > 1 and vocabulary is None:
        assert len(set(ends(reference))) == batch  # three end at different steps, one runs to the end


def test_greedy_stops_when_every_caption_has_ended():
    decoder = captioner(12)
    torch.manual_seed(12)
    ours, reference = both(decoder, latents(3), None)
    assert torch.equal(ours, reference)
    assert reference.shape[1] < NEW_TOKENS and None not in ends(reference)


@pytest.mark.parametrize("vocabulary", VOCABULARIES)
@pytest.mark.parametrize("batch", [1, 3])
def test_sampling_with_a_seed_matches_generate(batch, vocabulary):
    decoder = captioner(0, vocabulary)
    z = latents(batch)
    for options in (
        {"do_sample": True},  # generate()'s top_k of 50 is in force
        {"do_sample": True, "temperature": 0.7, "top_k": 6, "top_p": 0.9, "num_return_sequences": 2},
        {"do_sample": True, "repetition_penalty": 1.5, "no_repeat_ngram_size": 2, "min_new_tokens": 4},
    ):
        ours, reference = both(decoder, z, 7, **options)
        assert torch.equal(ours, reference), options
        assert written(ours, vocabulary), options
    assert ours.shape[0] == batch


@pytest.mark.parametrize("vocabulary", VOCABULARIES)
def test_greedy_options_match_generate(vocabulary):
    decoder = captioner(0, vocabulary)
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


def test_beams_write_only_the_vocabulary_and_rank_by_its_probabilities():
    """generate()'s beams see -inf outside the vocabulary before their log-softmax, so a beam's
    score is its log-probability over the vocabulary's words: what teacher forcing computes."""
    decoder = captioner(0, WORDS)
    z = latents(2)
    start = torch.full((2, 1), BOS)
    out = decoder.lm.generate(
        input_ids=start, attention_mask=torch.ones_like(start), encoder_hidden_states=decoder.memory(z),
        max_new_tokens=NEW_TOKENS, num_beams=3, length_penalty=0.0, output_scores=True, return_dict_in_generate=True,
        bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
    )
    caption = out.sequences
    assert written(caption, WORDS)
    mask = torch.ones_like(caption)
    mask[:, 1:] = ((caption == EOS).long().cumsum(1)[:, :-1] == 0).long()  # up to [SEP], with it
    torch.testing.assert_close(decoder.log_likelihood(z, caption, mask), out.sequences_scores, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("vocabulary", VOCABULARIES)
def test_the_loss_is_cross_entropy_over_the_vocabulary_and_other_words_count_as_unknown(vocabulary):
    decoder = captioner(3, vocabulary)
    z = latents(2)
    ids = torch.tensor([[BOS, 5, 9, 4, EOS], [BOS, 13, 10, EOS, PAD]])  # 4 is no word of WORDS
    mask = (ids != PAD).long()
    logits = decoder.lm(input_ids=ids, attention_mask=mask, encoder_hidden_states=decoder.memory(z)).logits
    targets = ids[:, 1:].clone()
    if vocabulary is not None:
        targets[targets == 4] = UNK
    expected = torch.nn.functional.cross_entropy(logits[:, :-1][mask[:, 1:].bool()], targets[mask[:, 1:].bool()])
    torch.testing.assert_close(decoder(z, ids, mask), expected)
