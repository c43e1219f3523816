"""Training checkpoints: a `from_pretrained` folder plus what resuming needs, written atomically.

    <dir>/config.json, model.safetensors, tokenizer files   the EMA weights: what generation loads
    <dir>/README.md                                           the model card (multimodal/model_card.py)
    <dir>/trainer_state.json                                  step, epoch, configs, history (and
                                                              optimiser settings and the fp16 loss
                                                              scaler's state when resumable)
    <dir>/training_weights.safetensors                        the raw (non-averaged) weights  } resumable
    <dir>/training_state.safetensors                          optimiser moments and RNG states} only
    <dir>/training_discriminator.safetensors                  the autoencoder stage's discriminator}

A LoRA run (`base` given) writes the adapter instead of config.json and model.safetensors
(see `multimodal/adapters/`), and its training weights are the raw adapter tensors alone:
the base is read again from its own folder.

Only safetensors and JSON: nothing is ever unpickled. Resuming reads the trainer state first and
merges the model it records with the flags given (`resumed_model_config`), so a flag that
disagrees, or a file that is damaged, is named before a tensor is loaded. A folder is first written beside its
target (`.<name>.tmp`) and then renamed into place, so a crash mid-write leaves the previous
one intact; `recover_checkpoint` completes a save that a crash cut off between its two renames.
`keep_step_copies` keeps step-numbered copies `step_NNNNNNN/` of the last K saves of latest/.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file, save_model

from multimodal.adapters import adapter_state, is_adapter, load_adapter_state, save_adapter
from multimodal.config import ModelConfig
from multimodal.errors import CheckpointError, ConfigError, TrainingError
from multimodal.model_card import write_model_card
from multimodal.models import GenerativeMultimodalModel
from multimodal.models.multimodal import ADDED_TENSORS
from multimodal.models.weights import load_safetensors, read_safetensors
from multimodal.files import being_written, folder_written_in_place, set_aside
from multimodal.paths import (
    ADAPTER_WEIGHTS,
    TRAINING_DISCRIMINATOR,
    TRAINER_STATE,
    TRAINING_STATE,
    TRAINING_WEIGHTS,
    WEIGHTS_NAME,
)


DISCRIMINATOR_OPTIMIZER = "discriminator_optimizer"  # its tensors' prefix in training_state.safetensors
# What a resumable trainer_state.json holds: trainer.py's `_state`, and the optimiser's and RNG's.
RESUME_KEYS = ("step", "history", "epoch_sums", "nonfinite_total", "optimizer", "rng", "model_config")
# The training fields that shape what latest/ holds besides the model: its adapters, its discriminator.
SHAPING_TRAIN_FIELDS = ("lora_rank", "lora_targets", "discriminator_width")


def _rng_tensors() -> dict[str, torch.Tensor]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    return tensors


def _python_rng_state() -> dict[str, Any]:
    version, state, gauss = random.getstate()
    numpy_state = np.random.get_state()
    return {
        "python": [version, list(state), gauss],
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
    }


def _restore_rng(tensors: dict[str, torch.Tensor], states: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])
    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))


def _optimizer_tensors(
    optimizer: torch.optim.Optimizer, prefix: str = "optimizer"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser state dict into tensors (safetensors, named `prefix.…`) and plain values (JSON)."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict[str, torch.Tensor], plain: dict[str, Any], prefix: str = "optimizer") -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith(prefix + "."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for name, value in plain["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": plain["param_groups"]}


def save_checkpoint(
    directory: Path,
    model: GenerativeMultimodalModel,
    ema_model: GenerativeMultimodalModel,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    resumable: bool = True,
    base: Path | None = None,
    discriminator: tuple[torch.nn.Module, torch.optim.Optimizer] | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    """Write a checkpoint folder atomically (temporary folder, then rename): what generation
    loads and the trainer's record, and with `resumable` what resuming needs besides (the raw
    weights, optimiser and RNG states: twice the size of the model again). With `base`, the
    models carry LoRA adapters on that checkpoint, and only the adapters are written. A run with an
    autoencoder stage passes its `discriminator` and that one's optimiser, an fp16 run its loss
    `scaler` (its state is a few numbers, kept in the JSON)."""
    with folder_written_in_place(directory) as temporary:
        if base is None:
            ema_model.save_pretrained(temporary)
        else:
            save_adapter(ema_model, temporary, base)
        state = dict(trainer_state)
        if resumable:
            if base is None:
                save_model(model, str(temporary / TRAINING_WEIGHTS))
            else:
                save_file(adapter_state(model), str(temporary / TRAINING_WEIGHTS))
            optimizer_tensors, optimizer_plain = _optimizer_tensors(optimizer)
            state |= {"optimizer": optimizer_plain, "rng": _python_rng_state()}
            if scaler is not None and scaler.is_enabled():
                state["grad_scaler"] = scaler.state_dict()
            if discriminator is not None:
                save_model(discriminator[0], str(temporary / TRAINING_DISCRIMINATOR))
                tensors, state["discriminator_optimizer"] = _optimizer_tensors(discriminator[1], DISCRIMINATOR_OPTIMIZER)
                optimizer_tensors |= tensors
            save_file({**optimizer_tensors, **_rng_tensors()}, str(temporary / TRAINING_STATE))
        (temporary / TRAINER_STATE).write_text(json.dumps(state, indent=2) + "\n")
        if base is None:  # an adapter folder has no model of its own to describe
            write_model_card(temporary)  # again, now with how it was trained


def is_resumable(directory: Path) -> bool:
    return all((Path(directory) / name).is_file() for name in (TRAINING_WEIGHTS, TRAINING_STATE, TRAINER_STATE))


def _is_complete(directory: Path) -> bool:
    """Every file written and the trainer state (written last) readable."""
    if not is_resumable(directory) or not ((directory / WEIGHTS_NAME).is_file() or is_adapter(directory)):
        return False
    try:
        json.loads((directory / TRAINER_STATE).read_text())
    except (OSError, ValueError):
        return False
    return True


def recover_checkpoint(directory: Path) -> bool:
    """Finish a save that a crash (kill -9, power cut) interrupted between moving the old folder
    aside and renaming the new one into place, so `directory` exists again. The new folder is
    used when it is complete, else the previous one. Returns whether anything was restored;
    a folder that exists is left as it is (the leftovers are removed by the next save)."""
    directory = Path(directory)
    if directory.exists():
        return False
    for candidate in (being_written(directory), set_aside(directory)):
        if candidate.is_dir() and _is_complete(candidate):
            try:
                candidate.rename(directory)
            except OSError:  # another process recovered it first
                return directory.exists()
            return True
    return False


STEP_COPY = re.compile(r"^step_(\d+)$")


def _link_or_copy(source: str, target: str) -> None:
    # Saves never modify a file in place (they write a new folder), so hard links are safe.
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def keep_step_copies(latest: Path, step: int, keep_last: int) -> Path | None:
    """Beside `latest`, keep `step_NNNNNNN/` copies of the last `keep_last` saves (0: none).

    Call right after saving `latest`. The copy is made of hard links where the file system
    allows (no extra space), written to a temporary folder and renamed, like every save.
    Older step folders beyond the last `keep_last` are deleted; returns the new copy."""
    if keep_last <= 0:
        return None
    latest = Path(latest)
    target = latest.with_name(f"step_{step:07d}")
    temporary = being_written(target)
    shutil.rmtree(temporary, ignore_errors=True)
    shutil.copytree(latest, temporary, copy_function=_link_or_copy)
    if target.exists():
        shutil.rmtree(target)
    temporary.rename(target)
    copies = sorted(
        (int(match.group(1)), path)
        for path in latest.parent.iterdir()
        if path.is_dir() and (match := STEP_COPY.match(path.name))
    )
    for _, path in copies[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)
    return target


def _read_state(directory: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    """`directory`'s trainer_state.json, read whole, with `keys` in it (a CheckpointError naming it)."""
    path = directory / TRAINER_STATE
    try:
        state = json.loads(path.read_text())
    except ValueError as error:  # UnicodeDecodeError too
        raise CheckpointError(f"{path} is damaged or cut short ({error}); resume from a copy of the run, "
                              "or start a new one") from None
    missing = [key for key in keys if key not in state] if isinstance(state, dict) else list(keys)
    if missing:
        raise CheckpointError(f"{path} is not a resumable trainer state: it lacks {', '.join(missing)}")
    return state


def _recorded_training(state: dict[str, Any]) -> dict[str, Any]:
    return state["train_config"] if isinstance(state.get("train_config"), dict) else {}


def resumable_state(latest: Path) -> dict[str, Any]:
    """The trainer state of the run to resume in `latest` (after completing a save that a crash
    cut off between its two renames), read whole and checked: nothing is loaded from a folder
    that cannot be resumed, and a damaged trainer_state.json is named."""
    latest = Path(latest)
    recover_checkpoint(latest)
    if not is_resumable(latest):
        raise TrainingError(f"--resume: no resumable checkpoint in {latest} (train without --resume first)")
    state = _read_state(latest, RESUME_KEYS)
    try:
        ModelConfig.from_dict(state["model_config"])
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{latest / TRAINER_STATE} records a model that cannot be built: {error}") from None
    return state


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _agree(name: str, given: Any, recorded: Any, remedy: str) -> None:
    if given != recorded:
        raise ConfigError(name, f"{_shown(given)} disagrees with the checkpoint's {_shown(recorded)}; {remedy}")


def resumed_model_config(
    state: dict[str, Any], model_given: dict[str, Any], train_given: dict[str, Any] | None = None
) -> ModelConfig:
    """The model a resumed run continues, as its trainer state records it, merged with what a
    person set: a model field (`model_given`), or a training field that shapes the checkpoint
    (`train_given`: the adapters' rank and targets, the discriminator's width), that disagrees
    with the record is a ConfigError naming it, found before a tensor is read."""
    recorded_training = _recorded_training(state)
    for name in SHAPING_TRAIN_FIELDS:
        if name in (train_given or {}) and name in recorded_training:
            _agree(name, train_given[name], recorded_training[name], "give its value or start a new run")
    recorded = ModelConfig.from_dict(state["model_config"])
    for name, value in model_given.items():  # a field not given is the record's
        _agree(name, value, getattr(recorded, name), "drop the flag or start a new run")
    return recorded


def _check_adapters(directory: Path, state: dict[str, Any], model: GenerativeMultimodalModel) -> None:
    """A LoRA run resumes with its adapters on its base, and a whole model's run without."""
    if is_adapter(directory) and not hasattr(model, "peft_config"):
        recorded = _recorded_training(state)
        flags = f"--init-from {recorded.get('init_from')} --lora-rank {recorded.get('lora_rank')}"
        raise CheckpointError(f"{directory} holds LoRA adapters; resume with the flags it was trained with ({flags})")
    if hasattr(model, "peft_config") and not is_adapter(directory):
        raise CheckpointError(f"{directory} holds a whole model, not LoRA adapters; resume without --lora-rank")


def load_checkpoint(
    directory: Path,
    model: GenerativeMultimodalModel,
    ema_model: GenerativeMultimodalModel,
    optimizer: torch.optim.Optimizer,
    discriminator: tuple[torch.nn.Module, torch.optim.Optimizer] | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, Any]:
    """Restore raw and EMA weights (the adapters alone, for a LoRA run), optimiser and RNG
    states, and the autoencoder stage's discriminator and the fp16 loss scaler when given (a
    scaler the checkpoint has no state for, as a run saved in another precision, starts
    afresh); returns the trainer state.
    A file that cannot be read or does not fit is a CheckpointError naming it."""
    directory = Path(directory)
    device = str(model.device)
    state = _read_state(directory, ("optimizer", "rng"))
    _check_adapters(directory, state, model)
    tensors = read_safetensors(directory / TRAINING_STATE)
    if is_adapter(directory):
        for target, name in ((model, TRAINING_WEIGHTS), (ema_model, ADAPTER_WEIGHTS)):
            load_adapter_state(target, read_safetensors(directory / name, device), directory / name)
    else:
        load_safetensors(model, directory / TRAINING_WEIGHTS, device, may_lack=ADDED_TENSORS)
        load_safetensors(ema_model, directory / WEIGHTS_NAME, device, may_lack=ADDED_TENSORS)
    if discriminator is not None:
        load_safetensors(discriminator[0], directory / TRAINING_DISCRIMINATOR, device, described_by=TRAINER_STATE)
    try:
        optimizer.load_state_dict(_optimizer_state(tensors, state["optimizer"]))
        if discriminator is not None:
            discriminator[1].load_state_dict(
                _optimizer_state(tensors, state["discriminator_optimizer"], DISCRIMINATOR_OPTIMIZER)
            )
        _restore_rng(tensors, state["rng"])
        if scaler is not None and scaler.is_enabled() and "grad_scaler" in state:
            scaler.load_state_dict(state["grad_scaler"])
    except (KeyError, IndexError, ValueError, TypeError, RuntimeError) as error:
        raise CheckpointError(f"{directory / TRAINING_STATE} does not fit {TRAINER_STATE} and this run's "
                              f"optimiser: {error!r}") from None
    return state
