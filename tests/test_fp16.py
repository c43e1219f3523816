"""--precision fp16: autocast fp16 with a GradScaler; steps whose gradients overflow are skipped
and counted, and the scaler's state resumes exactly."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import run_recording, tiny_trainer
from multimodal.config import TrainConfig
from multimodal.device import autocast_dtype


def cpu_fp16_problem() -> str | None:
    """Why this platform cannot train in fp16 on the CPU, or None."""
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            x = torch.nn.functional.conv2d(torch.ones(1, 1, 4, 4), torch.ones(1, 1, 3, 3)) @ torch.ones(2, 2)
        if x.dtype != torch.float16:
            return f"CPU autocast fp16 computes {x.dtype} here"
        torch.amp.GradScaler("cpu")
    except (RuntimeError, TypeError, ValueError) as error:
        return f"CPU autocast fp16 or GradScaler('cpu') does not run on this platform: {error}"
    return None


needs_cpu_fp16 = pytest.mark.skipif(cpu_fp16_problem() is not None, reason=str(cpu_fp16_problem()))


def test_auto_takes_fp16_for_training_on_a_gpu_without_bf16_units(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert autocast_dtype("auto", cuda, training=True) is torch.float16  # a V100 or T4: bf16 only emulated
    assert autocast_dtype("auto", cuda, training=False) is torch.bfloat16  # generation as before
    assert autocast_dtype("bf16", cuda, training=True) is torch.bfloat16  # asked for, given
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert autocast_dtype("auto", cuda, training=True) is torch.bfloat16
    assert TrainConfig(precision="fp16").precision == "fp16"


@needs_cpu_fp16
def test_fp16_training_skips_overflowing_steps_and_resumes_with_the_scalers_state(shapes_dir, tmp_path):
    fp16 = dict(precision="fp16", epochs=1)  # 3 steps of 8 images; the run is stopped after 2
    straight_trainer = tiny_trainer(shapes_dir, tmp_path / "straight", **fp16)
    assert straight_trainer.autocast is torch.float16 and straight_trainer.scaler.is_enabled()
    initial_scale = straight_trainer.scaler.get_scale()
    straight = run_recording(straight_trainer)
    # A fresh scale of 2**16 overflows fp16's gradients: those steps are skipped, counted, and halve it.
    skipped = sum(metrics is None for metrics in straight)
    assert 1 <= skipped < len(straight) and straight_trainer.nonfinite_total == skipped
    assert straight_trainer.scaler.get_scale() == initial_scale / 2**skipped
    first_moment = next(iter(straight_trainer.optimizer.state.values()))
    assert int(first_moment["step"]) == len(straight) - skipped  # a skipped step moves no weight
    assert all(metrics is None or torch.isfinite(torch.tensor(metrics["loss"])) for metrics in straight)

    first = run_recording(tiny_trainer(shapes_dir, tmp_path / "stopped", **fp16), stop_at=2)
    recorded = json.loads((tmp_path / "stopped" / "latest" / "trainer_state.json").read_text())["grad_scaler"]
    resumed_trainer = tiny_trainer(shapes_dir, tmp_path / "stopped", resume=True, **fp16)
    assert resumed_trainer.step == 2 and resumed_trainer.scaler.state_dict() == recorded
    assert recorded["scale"] < initial_scale  # the state saved is the one training reached, not a fresh one
    second = run_recording(resumed_trainer)
    assert len(first) + len(second) == len(straight)
    for expected, actual in zip(straight, first + second):
        assert (actual is None) == (expected is None)  # the resumed scale overflows where the straight one did
        if actual is not None:
            assert actual["loss"] == pytest.approx(expected["loss"], rel=1e-4, abs=1e-5)
    assert resumed_trainer.scaler.state_dict() == straight_trainer.scaler.state_dict()
    assert resumed_trainer.nonfinite_total == straight_trainer.nonfinite_total
