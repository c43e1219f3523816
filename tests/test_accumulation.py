"""--grad-accum N: the contrastive loss ranks each pair among all N micro-batches (open_clip's
--accum-freq), so accumulation 4 × B trains like 1 × 4B, and 2 processes × 2 × B like 1 × 4B."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from conftest import free_port, tiny_config
from multimodal.config import TrainConfig
from multimodal.losses import ContrastiveLoss, FeatureCache
from multimodal.training import Trainer
from multimodal.training.distributed import shutdown_distributed

B = 4  # images per micro-batch


def test_the_cached_loss_over_micro_batches_is_the_loss_over_their_union_with_hard_negatives():
    torch.manual_seed(0)
    image, text = F.normalize(torch.randn(4 * B, 16), dim=-1), F.normalize(torch.randn(4 * B, 16), dim=-1)
    negatives = F.normalize(torch.randn(4 * B, 2, 16), dim=-1)
    valid = torch.rand(4 * B, 2) > 0.3

    def leaves() -> list[torch.Tensor]:
        return [t.clone().requires_grad_() for t in (image, text, negatives)]

    whole = ContrastiveLoss().train()
    inputs = leaves()
    expected = whole(*inputs, valid)["loss"]
    expected.backward()

    loss = ContrastiveLoss().train()
    inputs_accumulated = leaves()
    chunks = [[t[k * B : (k + 1) * B] for t in (*inputs_accumulated, valid)] for k in range(4)]
    with loss.accumulating(FeatureCache()) as cache:
        with torch.no_grad():
            for chunk in chunks:
                loss(*chunk)
        values = []
        for k, chunk in enumerate(chunks):
            cache.live = k
            out = loss(*chunk)["loss"]
            out.backward()  # the whole loss each pass, as the trainer weighs it
            values.append(out.item())
    assert loss.cache is None
    assert values == pytest.approx([expected.item()] * 4, abs=1e-6)
    for mine, reference in zip(inputs_accumulated, inputs):
        torch.testing.assert_close(mine.grad, reference.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss.log_logit_scale.grad, whole.log_logit_scale.grad, rtol=1e-5, atol=1e-6)


def accumulation_trainer(shapes_dir: Path, output_dir: Path, batch_size: int, grad_accum: int) -> Trainer:
    """The encoders stage (no diffusion noise) of a model whose losses are per-image means
    (contrastive, reconstruction, fast path; fixed latent statistics; no per-token caption
    loss), clipping off: every gradient can be compared."""
    config = TrainConfig(
        preset="shapes", data_dir=str(shapes_dir), output_dir=str(output_dir), epochs=1, diffusion_epochs=1,
        batch_size=batch_size, grad_accum=grad_accum, num_workers=0, sample_every_epoch=False, max_grad_norm=1e9,
        device="cpu", precision="fp32",
    )
    return Trainer(tiny_config(freeze_bert=True, latent_stats_momentum=0.0, caption_weight=0.0), config)


def micro_batches(trainer: Trainer, first: int, count: int) -> list[dict]:
    return [trainer.collate([trainer.train_set[i] for i in range(first + k * B, first + (k + 1) * B)])
            for k in range(count)]


def step_and_gradients(trainer: Trainer, batches: list[dict]) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    metrics = trainer.train_step(batches)
    assert trainer.stage.name == "encoders" and "contrastive" in trainer.stage.loss_weights
    return metrics, {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.grad is not None}


def one_batch_of_4b(shapes_dir: Path, output_dir: Path) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    trainer = accumulation_trainer(shapes_dir, output_dir, 4 * B, 1)
    batch = trainer.collate([trainer.train_set[i] for i in range(4 * B)])
    return step_and_gradients(trainer, [batch])


def assert_same_step(actual: tuple, expected: tuple) -> None:
    (metrics, grads), (expected_metrics, expected_grads) = actual, expected
    for name in ("cont", "rec", "fast", "loss"):
        assert metrics[name] == pytest.approx(expected_metrics[name], rel=1e-5, abs=1e-6), name
    assert set(grads) == set(expected_grads)
    assert "contrastive.log_logit_scale" in grads and any(name.startswith("image_encoder.head") for name in grads)
    for name, grad in expected_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-5, msg=name)


def test_accumulation_4_of_b_gives_the_loss_and_gradients_of_one_batch_of_4b(shapes_dir, tmp_path):
    accumulated = accumulation_trainer(shapes_dir, tmp_path / "accumulated", B, 4)
    latent_mean = accumulated.model.diffusion.latent_mean.clone()
    result = step_and_gradients(accumulated, micro_batches(accumulated, 0, 4))
    assert_same_step(result, one_batch_of_4b(shapes_dir, tmp_path / "whole"))
    assert accumulated.model.training and accumulated.model.contrastive.cache is None
    torch.testing.assert_close(accumulated.model.diffusion.latent_mean, latent_mean)


def _worker(rank: int, port: int, shapes_dir: str, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        trainer = accumulation_trainer(Path(shapes_dir), Path(out_dir) / "ddp", B, 2)
        assert trainer.dist.world_size == 2
        metrics, grads = step_and_gradients(trainer, micro_batches(trainer, rank * 2 * B, 2))
        if rank == 0:
            scalars = {f"__{name}__": torch.tensor(value) for name, value in metrics.items()}
            save_file(grads | scalars, str(Path(out_dir) / "ddp.safetensors"))
    finally:
        shutdown_distributed()


def test_two_processes_accumulating_2_of_b_equal_one_batch_of_4b(shapes_dir, tmp_path):
    mp.spawn(_worker, args=(free_port(), str(shapes_dir), str(tmp_path)), nprocs=2, join=True)
    saved = load_file(tmp_path / "ddp.safetensors")
    metrics = {name.strip("_"): saved.pop(name).item() for name in list(saved) if name.startswith("__")}
    assert_same_step((metrics, saved), one_batch_of_4b(shapes_dir, tmp_path / "whole"))
