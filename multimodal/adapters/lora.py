"""The LoRA code, with peft: add adapters to a model, save them beside a pointer to their base,
load them onto that base only, and merge them into it (`multimodal.adapters` names the layout
of an adapter folder)."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils.other import AuxiliaryTrainingWrapper
from safetensors.torch import save_file
from torch import nn
from transformers.pytorch_utils import Conv1D

from multimodal.errors import CheckpointError, InvalidInputError
from multimodal.files import folder_written_in_place, input_overwritten
from multimodal.hub import hub_origin
from multimodal.models.weights import mismatch, read_safetensors
from multimodal.paths import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    BASE_POINTER,
    WEIGHTS_NAME,
    adapter_base,
    read_base_pointer,
    resolve_checkpoint,
)


def is_adapter(directory: str | os.PathLike) -> bool:
    return (Path(directory) / ADAPTER_WEIGHTS).is_file()


# The layers LoRA adapts (peft has no adapter for transposed convolutions).
ADAPTABLE = (nn.Linear, nn.Conv2d, Conv1D)


def target_layers(model: nn.Module, targets: Sequence[str]) -> list[str]:
    """The full names of the layers `targets` name: each target is the end of a module's name
    ("qkv", "caption_decoder.lm"), and stands for every adaptable layer in that module."""
    layers: list[str] = []
    names = [name for name, _ in model.named_modules()]
    for target in targets:
        matched = [name for name in names if name == target or name.endswith("." + target)]
        if not matched:
            raise InvalidInputError(f"{target!r} is no module of the model")
        for name in matched:
            layers += [
                f"{name}.{inner}" if inner else name
                for inner, layer in model.get_submodule(name).named_modules()
                if isinstance(layer, ADAPTABLE)
            ]
    return sorted(set(layers))


# The caption decoder's word embeddings and its output layer: one tied matrix in GPT-2.
WORD_EMBEDDINGS = "caption_decoder.lm.transformer.wte"
WORD_OUTPUT = "caption_decoder.lm.lm_head"


def add_adapters(
    model: nn.Module, rank: int, alpha: float, targets: Sequence[str], tokens: Sequence[int] = ()
) -> nn.Module:
    """Inject fresh LoRA layers (B = 0, so the model computes what it did) into the layers
    `targets` name (see `target_layers`), and let only them learn. The caption decoder's rows
    for the token ids `tokens` learn too (peft's trainable tokens), one row shared by its tied
    input and output layers, and those words join the ones it may write: a word the base never
    wrote, such as "orange", has only random rows there, which no low-rank update of the other
    layers can make it say. The latent statistics belong to the base and stay fixed: the base's
    weights stay bit for bit as they were."""
    config = LoraConfig(
        r=rank, lora_alpha=alpha, target_modules=target_layers(model, targets), lora_dropout=0.0,
        trainable_token_indices={WORD_EMBEDDINGS: sorted(tokens), WORD_OUTPUT: sorted(tokens)} if tokens else None,
    )
    with warnings.catch_warnings():  # peft says that it reads GPT-2's Conv1D weights transposed, as it must
        warnings.simplefilter("ignore", UserWarning)
        inject_adapter_in_model(config, model)
    if tokens:  # tie the output layer's rows to the embedding's, as the base ties the two matrices
        shared = model.get_submodule(WORD_EMBEDDINGS).token_adapter.trainable_tokens_delta
        model.get_submodule(WORD_OUTPUT).token_adapter.trainable_tokens_delta["default"] = shared["default"]
        model.caption_decoder.lm.add_words(tokens)  # words the base never wrote join its vocabulary
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(".lora_" in name or ".trainable_tokens_delta." in name)
    model.diffusion.track_latent_stats = False
    return model


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors in peft's naming (what adapter_model.safetensors holds), as copies: the
    tied token rows appear under both layers' names."""
    return {name: tensor.detach().cpu().clone() for name, tensor in get_peft_model_state_dict(model).items()}


def load_adapter_state(model: nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Put the adapter tensors read from `source` into `model`'s adapters (a CheckpointError
    naming `source` when they are not of those adapters)."""
    try:
        result = set_peft_model_state_dict(model, tensors)
    except RuntimeError as error:  # a tensor of another shape than its adapter's
        raise CheckpointError(f"{source} does not match its {ADAPTER_CONFIG}: {mismatch(error)}") from None
    if result.unexpected_keys:
        raise CheckpointError(f"{source} does not fit the model: unexpected tensors {', '.join(result.unexpected_keys[:5])}")


def fingerprint(checkpoint: Path) -> str:
    """SHA-256 of a checkpoint's weights: what an adapter was trained on, whatever its path."""
    digest = hashlib.sha256()
    with open(checkpoint / WEIGHTS_NAME, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_adapter(model: nn.Module, directory: Path, base: Path) -> None:
    """adapter_config.json, adapter_model.safetensors and the pointer to `base` into `directory`
    (a Hub snapshot's repo id and commit, else its path)."""
    directory.mkdir(parents=True, exist_ok=True)
    model.peft_config["default"].save_pretrained(str(directory))
    save_file(adapter_state(model), str(directory / ADAPTER_WEIGHTS))
    pointer = {"base_checkpoint": str(Path(base).absolute()), "sha256": fingerprint(Path(base))}
    origin = hub_origin(base)
    if origin is not None:  # a Hub snapshot: its repo and commit find it on any machine
        pointer |= {"base_checkpoint": origin[0], "revision": origin[1]}
    (directory / BASE_POINTER).write_text(json.dumps(pointer, indent=2) + "\n")


def load_adapter(model: nn.Module, adapter: str | os.PathLike, base: str | os.PathLike) -> nn.Module:
    """Inject the adapter in `adapter` into `model`, loaded from `base`: refused, with one line,
    when `base` is not the checkpoint the adapter was trained from."""
    adapter, base = Path(adapter), Path(base)
    pointer = read_base_pointer(adapter)
    if fingerprint(base) != pointer["sha256"]:
        raise CheckpointError(
            f"adapter {adapter} was trained on {pointer['base_checkpoint']}, and {base} holds other weights; "
            f"load it onto that checkpoint"
        )
    try:
        config = LoraConfig.from_pretrained(str(adapter))
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{adapter / ADAPTER_CONFIG} is not a LoRA config: {error}") from None
    try:
        tokens = (config.trainable_token_indices or {}).get(WORD_EMBEDDINGS, ())
        add_adapters(model, config.r, config.lora_alpha, sorted(config.target_modules), tokens)
    except (ValueError, TypeError, AttributeError) as error:  # peft's checks of the rank, targets, tokens
        raise CheckpointError(f"{adapter / ADAPTER_CONFIG} does not describe adapters of {base}: {error}") from None
    weights = adapter / ADAPTER_WEIGHTS
    load_adapter_state(model, read_safetensors(weights, model.device), weights)
    return model.requires_grad_(False)


def merge_adapters(model: nn.Module) -> nn.Module:
    """Fold every adapter into the layer it adapts (W + B·A·alpha/r; the learned token rows) and
    remove it: a plain model."""
    for kind in (AuxiliaryTrainingWrapper, BaseTunerLayer):  # token wrappers first: they hold tuner layers
        for name, module in list(model.named_modules()):
            if isinstance(module, kind):
                if kind is AuxiliaryTrainingWrapper:
                    plain = module.unload_and_optionally_merge_module(merge=True, safe_merge=False, adapter_names=None)
                else:
                    module.merge()
                    plain = module.get_base_layer()
                parent, _, child = name.rpartition(".")
                model.get_submodule(parent).register_module(child, plain)
    del model.peft_config
    model.diffusion.track_latent_stats = True
    return model


def merge(adapter: Path, output: Path, base: Path | None = None, overwrite: bool = False) -> Path:
    """Write `base` (default: the adapter's own) with `adapter` merged into it as a plain checkpoint
    folder at `output`, atomically (written beside it, then renamed)."""
    from multimodal.models import GenerativeMultimodalModel

    base = resolve_checkpoint(base if base is not None else adapter_base(adapter))
    problem = input_overwritten(output, {"the adapter": adapter, "the base checkpoint": base})
    if problem:
        raise InvalidInputError(problem)
    if output.exists() and not overwrite:
        raise CheckpointError(f"{output} already exists; pass --overwrite to replace it")
    model = GenerativeMultimodalModel.from_pretrained(base)
    merge_adapters(load_adapter(model, adapter, base))
    with folder_written_in_place(output) as temporary:
        model.save_pretrained(temporary)
    return output
