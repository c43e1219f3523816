"""Activation checkpointing: compute for memory, the same gradients.

A checkpointed block keeps only its inputs for the backward pass and runs again there to get
its activations back (torch.utils.checkpoint, non-reentrant, with the same dropout masks). Our
own blocks go through `checkpointed`; BERT and the caption decoder's GPT-2 through transformers'
own switch (`set_transformers_checkpointing`). Whether a block is checkpointed is a training
setting (TrainConfig.gradient_checkpointing), never saved with the weights.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

if TYPE_CHECKING:
    from transformers import PreTrainedModel

NON_REENTRANT = {"use_reentrant": False}


def checkpointed(function: Callable[..., Any], *inputs: Any, enabled: bool = True) -> Any:
    """`function(*inputs)`, checkpointed when `enabled` and gradients are being recorded (with
    no backward pass to come there is nothing to save). `function` is a module, or a function
    of modules without batch norm: a module's batch-norm layers in training mode update their
    running statistics once, as without checkpointing, and not a second time in the recomputation."""
    if not (enabled and torch.is_grad_enabled() and _needs_gradients(function, inputs)):
        return function(*inputs)
    modules = function.modules() if isinstance(function, nn.Module) else ()
    norms = [m for m in modules if isinstance(m, _BatchNorm) and m.training and m.track_running_stats]
    contexts = {"context_fn": partial(_statistics_kept_in_recomputation, norms)} if norms else {}
    return checkpoint(function, *inputs, **NON_REENTRANT, **contexts)


def _needs_gradients(function: Callable[..., Any], inputs: tuple) -> bool:
    """Whether a backward pass will go through `function`: an input or, for a module, a parameter
    that wants gradients (a frozen trunk runs as it is). A plain function is taken to need them."""
    if any(isinstance(x, torch.Tensor) and x.requires_grad for x in inputs):
        return True
    return not isinstance(function, nn.Module) or any(p.requires_grad for p in function.parameters())


def _statistics_kept_in_recomputation(norms: list[_BatchNorm]) -> tuple[Any, Any]:
    """checkpoint's (forward, recomputation) contexts: nothing, and the statistics put back."""
    return nullcontext(), _running_statistics_restored(norms)


@contextmanager
def _running_statistics_restored(norms: list[_BatchNorm]) -> Iterator[None]:
    """The batch-norm buffers (running mean, variance, batch count) as they were before the block ran
    again: the forward pass already counted this batch. (The recomputation may stop early, by raising.)"""
    buffers = [buffer for norm in norms for buffer in norm.buffers()]
    saved = [buffer.clone() for buffer in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(buffers, saved):
                buffer.copy_(value)


def set_transformers_checkpointing(model: PreTrainedModel, on: bool) -> None:
    """transformers' own switch for its layers, non-reentrant: `activation_checkpointing_*` since
    transformers 5 (which deprecates the older `gradient_checkpointing_*`, all 4.x has)."""
    if hasattr(model, "activation_checkpointing_enable"):
        if on:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=NON_REENTRANT)
        else:
            model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=NON_REENTRANT)
    else:
        model.gradient_checkpointing_disable()
