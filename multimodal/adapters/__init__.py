"""LoRA adapters: teach a trained checkpoint something new in a small file beside it.

    <adapter>/adapter_config.json          peft's LoraConfig (rank, alpha, target modules)
    <adapter>/adapter_model.safetensors    peft's adapter weights (lora_A / lora_B)
    <adapter>/base_checkpoint.json         the base checkpoint: its path and its weights' SHA-256

peft injects the low-rank layers into our own modules (parameter names stay ours, with
`base_layer` / `lora_A` / `lora_B` inserted), so training stages and the EMA work unchanged.
An adapter loads only onto the base it was trained from: the base's weights are fingerprinted,
and another base is refused with one line. `merge` folds an adapter into its base and writes a
plain checkpoint (`python -m multimodal.adapters merge ADAPTER OUTPUT`).

    lora.py       the peft code: add, save, load, merge (torch and peft)
    targets.py    LORA_TARGETS, the modules adapted by default (plain strings)
    __main__.py   the command line, python -m multimodal.adapters
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multimodal.adapters.lora import (
        ADAPTABLE,
        WORD_EMBEDDINGS,
        WORD_OUTPUT,
        adapter_state,
        add_adapters,
        fingerprint,
        is_adapter,
        load_adapter,
        load_adapter_state,
        merge,
        merge_adapters,
        save_adapter,
        target_layers,
    )

_LORA = (
    "ADAPTABLE", "WORD_EMBEDDINGS", "WORD_OUTPUT", "adapter_state", "add_adapters", "fingerprint", "is_adapter",
    "load_adapter", "load_adapter_state", "merge", "merge_adapters", "save_adapter", "target_layers",
)


def __getattr__(name: str) -> Any:
    """torch and peft take seconds to import, so the LoRA code loads on first use of one of its
    names: the configuration reads `multimodal.adapters.targets` without loading them."""
    if name in _LORA:
        from multimodal.adapters import lora

        return getattr(lora, name)
    raise AttributeError(f"module 'multimodal.adapters' has no attribute {name!r}")


__all__ = list(_LORA)
