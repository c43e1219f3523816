"""Greedy and sampled captions without transformers' generate() overhead, token for token the same.

At batch 1 the caption decoder's arithmetic per token is a few MFLOP plus the output layer's
rows of its vocabulary (all 30,522 of BERT's words unless training narrowed it); around it
generate() does bookkeeping every token (attention masks, cache objects, logits processors that
rebuild vocabulary-sized masks, stopping criteria): at the coco size, half its time goes outside
the matrix products. This loop calls GPT-2's own modules, so weights, adapters and the checkpoint
format are unchanged; the cross-attention keys/values of the 49 memory tokens are computed once,
and the self-attention keys/values go into a cache preallocated for the whole caption. Every
tensor operation runs on the shapes generate() gives it, and the logits processors are
transformers' own classes in generate()'s order (greedy captions with none pick the best of the
vocabulary's words, never spreading them over every id), so at fp32 the tokens are bit-identical
(tests/test_caption_decoding.py checks greedy and sampling against generate(), over every word
and over a narrower vocabulary). Beam search, training mode and the options outside `OPTIONS`
stay on generate(): `applies` decides. What is left at batch 1 is mostly reading the weights,
~46 MB per token at fp32 for the coco decoder over every word (bench: `matmul_tokens_per_s`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from transformers import (
    LogitsProcessorList,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

if TYPE_CHECKING:
    from multimodal.models.caption_decoder import CaptionLM

# The GenerationConfig options this loop reproduces. length_penalty and early_stopping act only
# in beam search, which generate() does, so without beams they change nothing.
OPTIONS = frozenset({
    "max_new_tokens", "min_new_tokens", "min_length", "do_sample", "temperature", "top_k", "top_p",
    "repetition_penalty", "no_repeat_ngram_size", "num_return_sequences", "num_beams", "use_cache",
    "length_penalty", "early_stopping",
})
DEFAULT_TOP_K = 50  # generate()'s default when sampling and top_k is unset


def applies(options: dict[str, Any], training: bool) -> bool:
    """Whether `decode` gives what generate() would for these options. Not in training mode
    (dropout draws random numbers), not for beams, not without the cache (generate() is the
    cache-less reference), not for several greedy sequences (generate() rejects those)."""
    return (
        not training
        and set(options) <= OPTIONS
        and options.get("num_beams", 1) == 1
        and options.get("use_cache", True)
        and (options.get("num_return_sequences", 1) == 1 or options.get("do_sample", False))
    )


def logits_processors(options: dict[str, Any]) -> tuple[LogitsProcessorList, LogitsProcessorList]:
    """The processors generate() builds for these options, in its order: those before the minimum
    length and those after it (the warpers of sampling). The minimum length itself is applied in
    `decode`: generate()'s processors for it rebuild a vocabulary-sized mask every token only to
    set one score to -inf."""
    processors, warpers = LogitsProcessorList(), LogitsProcessorList()
    penalty = options.get("repetition_penalty")
    if penalty is not None and penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(penalty))  # no padding before [CLS] to ignore
    if options.get("no_repeat_ngram_size"):
        processors.append(NoRepeatNGramLogitsProcessor(options["no_repeat_ngram_size"]))
    if options.get("do_sample", False):
        temperature, top_k, top_p = options.get("temperature"), options.get("top_k", DEFAULT_TOP_K), options.get("top_p")
        if temperature is not None and temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(temperature))
        if top_k is not None and top_k != 0:
            warpers.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
        if top_p is not None and top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
    return processors, warpers


class Decoder:
    """One caption batch's decoding state: the cross-attention keys/values and the self-attention
    cache of every layer, for `rows` captions of up to `length` tokens ([CLS] included).
    `over_words`: its logits are over the vocabulary's words alone, not over every id."""

    def __init__(self, lm: CaptionLM, memory: torch.Tensor, length: int, over_words: bool = False) -> None:
        self.transformer = lm.transformer
        self.head = lm.word_head() if over_words else lm.next_token_head()
        self.rows, self.length = memory.shape[0], length
        first = self.transformer.h[0].attn
        self.heads, self.head_dim, self.width = first.num_heads, first.head_dim, first.embed_dim
        self.positions = self.transformer.wpe(torch.arange(length, device=memory.device))
        self.cross = [self._split_heads(block.crossattention.c_attn(memory).split(self.width, dim=2))
                      for block in self.transformer.h]
        self.cache: list[tuple[torch.Tensor, torch.Tensor]] = []  # allocated at the first step, in its dtype

    def _split_heads(self, states: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        """(B, T, width) tensors as GPT2Attention splits them: (B, heads, T, head_dim) views."""
        return [s.view(*s.shape[:-1], self.heads, self.head_dim).transpose(1, 2) for s in states]

    def step(self, tokens: torch.Tensor, position: int) -> torch.Tensor:
        """fp32 next-token logits (rows, vocab) after `tokens` (rows,) at `position`: GPT2Model's
        forward for one token with its cache, in eval mode (dropout is the identity); over the
        vocabulary's words alone, in the order of their ids, (rows, len(lm.words)), if `over_words`."""
        hidden = self.transformer.wte(tokens[:, None]) + self.positions[position]
        end = position + 1
        for index, block in enumerate(self.transformer.h):
            attention = block.attn
            query, key, value = self._split_heads(attention.c_attn(block.ln_1(hidden)).split(self.width, dim=2))
            if len(self.cache) <= index:
                shape = (self.rows, self.heads, self.length, self.head_dim)
                self.cache.append((key.new_empty(shape), value.new_empty(shape)))
            keys, values = self.cache[index]
            keys[:, :, position : end] = key
            values[:, :, position : end] = value
            hidden = self._attend(attention, query, keys[:, :, :end], values[:, :, :end]) + hidden
            cross = block.crossattention
            query = self._split_heads((cross.q_attn(block.ln_cross_attn(hidden)),))[0]
            hidden = hidden + self._attend(cross, query, *self.cross[index])
            mlp = block.mlp
            hidden = hidden + mlp.c_proj(mlp.act(mlp.c_fc(block.ln_2(hidden))))
        logits = self.head(self.transformer.ln_f(hidden))
        return logits[:, -1].to(copy=True, dtype=torch.float32)

    @staticmethod
    def _attend(attention: torch.nn.Module, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """transformers' sdpa attention for one query token (no mask: every earlier token counts)
        and the attention's output projection."""
        out = F.scaled_dot_product_attention(query, keys, values, dropout_p=0.0, scale=attention.scaling)
        out = out.transpose(1, 2).contiguous()
        return attention.c_proj(out.reshape(*out.shape[:-2], -1).contiguous())


@torch.no_grad()
def decode(lm: CaptionLM, memory: torch.Tensor, bos_id: int, eos_id: int, pad_id: int,
           options: dict[str, Any]) -> torch.Tensor:
    """Token ids (B · num_return_sequences, 1 + T) from [CLS], as generate() returns them for
    these `options` (see `applies`): a finished caption is padded with `pad_id`, and decoding stops
    when every caption has ended or after max_new_tokens."""
    sample = options.get("do_sample", False)
    memory = memory.repeat_interleave(options.get("num_return_sequences", 1), dim=0)
    rows, new_tokens = memory.shape[0], options["max_new_tokens"]
    # generate() turns min_new_tokens into min_length too; min_length counts [CLS].
    min_new = max(options.get("min_new_tokens") or 0, (options.get("min_length") or 0) - 1)
    processors, warpers = logits_processors(options)
    # Greedy with no processor that reads every id: the argmax over the vocabulary's words is the
    # argmax over every id (the others are -inf, and the words are in the order of their ids).
    over_words = lm.restricted and not sample and not processors
    decoder = Decoder(lm, memory, 1 + new_tokens, over_words)
    eos_column = int(lm.word_index[eos_id]) if over_words else eos_id
    ids = torch.full((rows, 1 + new_tokens), bos_id, dtype=torch.long, device=memory.device)
    unfinished = torch.ones(rows, dtype=torch.long, device=memory.device)
    length = 1
    while length <= new_tokens:
        so_far = ids[:, :length]
        scores = processors(so_far, decoder.step(so_far[:, -1], length - 1))
        if length - 1 < min_new:
            scores[:, eos_column] = -float("inf")
        scores = warpers(so_far, scores)
        if sample:
            tokens = torch.multinomial(F.softmax(scores, dim=-1), num_samples=1).squeeze(1)
        else:
            tokens = torch.argmax(scores, dim=-1)
        if over_words:
            tokens = lm.words[tokens]
        ids[:, length] = tokens * unfinished + pad_id * (1 - unfinished)
        unfinished = unfinished & (ids[:, length] != eos_id)
        length += 1
        if not unfinished.any():
            break
    return ids[:, :length]
