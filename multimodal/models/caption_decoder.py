"""Caption decoder: a small GPT-2 that cross-attends to the image latent.

It is a transformers causal LM on purpose: `generate()` gives beam search and every other
decoding option; greedy and sampled captions, the common ones, take a loop of our own over the
same modules (caption_decoding.py), for speed. It
speaks the BERT tokenizer's ids: [CLS] starts a caption and [SEP] ends it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, GenerationConfig

from multimodal.config import ModelConfig
from multimodal.logs import quiet_transformers
from multimodal.models import caption_decoding
from multimodal.models.checkpointing import set_transformers_checkpointing


class CaptionDecoder(nn.Module):
    def __init__(self, config: ModelConfig, vocab_size: int, bos_id: int, eos_id: int, pad_id: int) -> None:
        super().__init__()
        width = config.caption_width
        # The 7×7 latent becomes 49 memory tokens, each with a learned position, started at
        # `caption_position_std` (docs/DESIGN.md: what each scale does to the scenes and shapes sets).
        self.memory_projection = nn.Linear(config.latent_channels, width)
        self.memory_position = nn.Parameter(torch.zeros(1, config.latent_size**2, width))
        nn.init.normal_(self.memory_position, std=config.caption_position_std)
        self.lm = GPT2LMHeadModel(
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
            )
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
        """Logits where there is a real next token, those tokens, and the row each belongs to.
        Position i predicts token i+1; the output layer (30,522 words wide) runs only there, not
        on the padding: it is most of the decoder's cost."""
        input_ids = input_ids[:, : self.max_length]
        attention_mask = attention_mask[:, : self.max_length]
        hidden = self.lm.transformer(
            input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=self.memory(z),
            use_cache=False,  # one pass over whole captions: no key/value cache to keep
        ).last_hidden_state
        has_target = attention_mask[:, 1:].bool()
        rows = has_target.nonzero()[:, 0]
        return self.lm.lm_head(hidden[:, :-1][has_target]), input_ids[:, 1:][has_target], rows

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
