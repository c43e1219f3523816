"""Caption decoder: a small GPT-2 that cross-attends to the image latent.

It is a transformers causal LM on purpose: `generate()` gives beam search and every other
decoding option; greedy and sampled captions, the common ones, take a loop of our own over the
same modules (caption_decoding.py), for speed. It
speaks the BERT tokenizer's ids: [CLS] starts a caption and [SEP] ends it.

Its vocabulary is the words it may write (`CaptionLM.writes`): training sets it to the
wordpieces of the training captions, so the output layer's softmax runs over those (the shapes
set's two dozen instead of BERT's 30,522) and every other word scores -inf. The output
layer keeps a row for every id, so the checkpoint format, adapters and exports stay those of a
decoder that writes every word, and a fine-tune adds its new words to the vocabulary.
"""

from __future__ import annotations

import functools
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, GenerationConfig

from multimodal.config import ModelConfig
from multimodal.logs import quiet_transformers
from multimodal.models import caption_decoding
from multimodal.models.checkpointing import set_transformers_checkpointing


class CaptionLM(GPT2LMHeadModel):
    """GPT-2 that writes only the words of its vocabulary: `writes` (one flag per token id,
    saved with the weights) says which. Its logits are -inf elsewhere, so generate()'s beams,
    sampling and every processor see the vocabulary's distribution. While it writes every word,
    it is GPT2LMHeadModel to the bit."""

    def __init__(self, config: GPT2Config, unknown_id: int) -> None:
        super().__init__(config)
        # In every vocabulary: [CLS], [SEP], [PAD], and [UNK], what a word outside it counts as.
        self.always = (config.bos_token_id, config.eos_token_id, config.pad_token_id, unknown_id)
        self.unknown_id = unknown_id
        self.register_buffer("writes", torch.ones(config.vocab_size, dtype=torch.bool))
        self.register_buffer("words", torch.arange(config.vocab_size), persistent=False)  # the ids it writes
        self.register_buffer("word_index", torch.arange(config.vocab_size), persistent=False)  # id → row of `words`
        self.restricted = False
        self.register_load_state_dict_post_hook(lambda module, _: module._vocabulary_changed())

    def set_vocabulary(self, ids: Iterable[int] | None) -> None:
        """Write only the words `ids` (and the special tokens); None: every word."""
        self.writes.fill_(ids is None)
        self.add_words(ids or ())

    def add_words(self, ids: Iterable[int]) -> None:
        """Write the words `ids` too: a fine-tune's new words."""
        self.writes[torch.tensor([*self.always, *ids], dtype=torch.long, device=self.writes.device)] = True
        self._vocabulary_changed()

    def _vocabulary_changed(self) -> None:
        self.words = self.writes.nonzero().squeeze(1)
        self.restricted = len(self.words) < len(self.writes)
        unknown = int(torch.searchsorted(self.words, self.unknown_id))
        self.word_index = torch.full_like(self.writes, unknown, dtype=torch.long)
        self.word_index[self.words] = torch.arange(len(self.words), device=self.words.device)

    def word_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over `words` only, (…, len(words)): the output layer's rows of the vocabulary
        (all of it while it writes every word). Adapted layers (peft's wrappers) run whole."""
        if not self.restricted:
            return self.lm_head(hidden)
        if type(self.lm_head) is nn.Linear:
            return F.linear(hidden, self.lm_head.weight[self.words], self.lm_head.bias)
        return self.lm_head(hidden)[..., self.words]

    def next_token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over every id, (…, vocab_size), -inf outside the vocabulary, computed from
        the vocabulary's rows only."""
        if not self.restricted:
            return self.lm_head(hidden)
        return self._over_every_id(self.word_logits(hidden))

    def next_token_head(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """`next_token_logits` for a decode loop: the vocabulary's rows of the output layer are
        gathered once for all its steps (the weights do not change while it decodes)."""
        if not self.restricted:
            return self.next_token_logits
        words = self.word_head()
        return lambda hidden: self._over_every_id(words(hidden))

    def word_head(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """`word_logits` for a decode loop, the vocabulary's rows gathered once for all its steps."""
        if not self.restricted or type(self.lm_head) is not nn.Linear:
            return self.word_logits
        weight, bias = self.lm_head.weight[self.words], self.lm_head.bias
        return lambda hidden: F.linear(hidden, weight, bias)

    def _over_every_id(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits over the vocabulary's words spread over every id, -inf at the others."""
        full = logits.new_full((*logits.shape[:-1], len(self.writes)), float("-inf"))
        return full.scatter(-1, self.words.expand(*logits.shape[:-1], -1), logits)  # a scatter exports to ONNX

    @functools.wraps(GPT2LMHeadModel.forward)  # its signature: generate() checks its arguments against it
    def forward(self, *args, **kwargs):
        output = super().forward(*args, **kwargs)
        if self.restricted and output.logits is not None:
            output.logits = output.logits.masked_fill(~self.writes, float("-inf"))
        return output


class CaptionDecoder(nn.Module):
    def __init__(self, config: ModelConfig, vocab_size: int, bos_id: int, eos_id: int, pad_id: int,
                 unk_id: int) -> None:
        super().__init__()
        width = config.caption_width
        # The 7×7 latent becomes 49 memory tokens, each with a learned position, started at
        # `caption_position_std` (docs/DESIGN.md: what each scale does to the scenes and shapes sets).
        self.memory_projection = nn.Linear(config.latent_channels, width)
        self.memory_position = nn.Parameter(torch.zeros(1, config.latent_size**2, width))
        nn.init.normal_(self.memory_position, std=config.caption_position_std)
        self.lm = CaptionLM(
            GPT2Config(
                vocab_size=vocab_size,
                n_positions=config.max_caption_length,
                n_embd=width,
                n_layer=config.caption_layers,
                n_head=config.caption_heads,
                resid_pdrop=config.caption_dropout,
                embd_pdrop=config.caption_dropout,
                attn_pdrop=config.caption_dropout,
                add_cross_attention=True,
                bos_token_id=bos_id,
                eos_token_id=eos_id,
                pad_token_id=pad_id,
            ),
            unknown_id=unk_id,
        )
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id
        self.max_length = config.max_caption_length

    def set_gradient_checkpointing(self, on: bool) -> None:
        """Checkpoint the GPT-2's layers, by transformers' own switch; a training setting."""
        set_transformers_checkpointing(self.lm, on)

    def memory(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, 7, 7) → (B, 49, width) tokens for cross-attention."""
        return self.memory_projection(z.flatten(2).transpose(1, 2)) + self.memory_position

    def forward(self, z: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Teacher-forced cross-entropy of the caption ([CLS] … [SEP]) given the image latent,
        averaged over every caption token of the batch."""
        logits, targets, _ = self._next_token_logits(z, input_ids, attention_mask)
        return F.cross_entropy(logits.float(), targets)

    def log_likelihood(self, z: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """log p(caption | image) of each row (B,): the sum of its tokens' log-probabilities after
        [CLS], [SEP] included. How likely the decoder finds a caption for an image is a judge of
        whether the image shows it (generation's best-of-N and evaluation's reranking ask it)."""
        logits, targets, rows = self._next_token_logits(z, input_ids, attention_mask)
        token_log_p = -F.cross_entropy(logits.float(), targets, reduction="none")
        return torch.zeros(len(z), device=z.device).index_add_(0, rows, token_log_p)

    def _next_token_logits(
        self, z: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits over the vocabulary where there is a real next token, those tokens as rows of
        the vocabulary (a word outside it counts as [UNK]), and the caption row each belongs to.
        Position i predicts token i+1; the output layer runs only there, not on the padding: it
        is most of the decoder's cost."""
        input_ids = input_ids[:, : self.max_length]
        attention_mask = attention_mask[:, : self.max_length]
        hidden = self.lm.transformer(
            input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=self.memory(z),
            use_cache=False,  # one pass over whole captions: no key/value cache to keep
        ).last_hidden_state
        has_target = attention_mask[:, 1:].bool()
        rows = has_target.nonzero()[:, 0]
        targets = input_ids[:, 1:][has_target]
        if self.lm.restricted:
            targets = self.lm.word_index[targets]
        return self.lm.word_logits(hidden[:, :-1][has_target]), targets, rows

    @torch.no_grad()
    def generate(self, z: torch.Tensor, max_new_tokens: int = 30, **decoding) -> torch.Tensor:
        """Token ids (B · num_return_sequences, T) after [CLS]; any `GenerationConfig` option
        (num_beams, do_sample, temperature, top_k, top_p, repetition_penalty, …) passes through.
        Greedy and sampled captions take our own decode loop (caption_decoding.py: the same tokens
        as generate(), faster); beams and the rarer options take transformers' generate()."""
        decoding = {name: value for name, value in decoding.items() if value is not None}  # None: unset, as for generate()
        if not caption_decoding.applies(decoding, self.training):
            return self.generate_with_transformers(z, max_new_tokens, **decoding)
        options = decoding | {"max_new_tokens": self._new_tokens(max_new_tokens)}
        return caption_decoding.decode(self.lm, self.memory(z), self.bos_id, self.eos_id, self.pad_id, options)[:, 1:]

    @torch.no_grad()
    def generate_with_transformers(self, z: torch.Tensor, max_new_tokens: int = 30, **decoding) -> torch.Tensor:
        """`generate` by transformers' generate() whatever the options: the route of beam search,
        and the reference our decode loop is tested and benchmarked against."""
        batch = z.shape[0]
        start = torch.full((batch, 1), self.bos_id, dtype=torch.long, device=z.device)
        generation_config = GenerationConfig(
            max_new_tokens=self._new_tokens(max_new_tokens),
            bos_token_id=self.bos_id,
            eos_token_id=self.eos_id,
            pad_token_id=self.pad_id,
            **({"use_cache": True} | decoding),  # the key/value cache, unless the caller turns it off
        )
        # Quiet: once a sampled caption has ended, transformers sees [PAD] fed back with no mask
        # and warns about padding; those tokens are dropped, so the warning is noise here.
        with quiet_transformers():
            ids = self.lm.generate(
                input_ids=start,
                attention_mask=torch.ones_like(start),
                encoder_hidden_states=self.memory(z),
                generation_config=generation_config,
            )
        return ids[:, 1:]

    def _new_tokens(self, asked: int) -> int:
        """At most as many new tokens as fit after [CLS] in the decoder's positions."""
        return min(asked, self.max_length - 1)
