"""The autoencoder stage: latent regularisers, its losses, the stage itself, and larger latents."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from torch import nn

from conftest import COCO_MINI, TINY_FLAGS, random_images, run_recording, tiny_config, tiny_trainer, train_in_process
from multimodal import GenerativeMultimodalModel
from multimodal.config import TrainConfig
from multimodal.errors import ConfigError
from multimodal.models.latent_regularizer import CodebookLatent, GaussianLatent
from multimodal.paths import TRAINING_DISCRIMINATOR
from multimodal.training import Trainer
from multimodal.training.autoencoder import adaptive_weight
from multimodal.training.stages import plan_stages


def test_vq_passes_gradients_straight_through_and_trains_the_chosen_codes():
    torch.manual_seed(0)
    vq = CodebookLatent(tiny_config(latent_regularizer="vq", codebook_size=16, latent_channels=4))
    features = torch.randn(2, 4, 3, 3, requires_grad=True)
    z, terms = vq(features)
    codebook = vq.quantizer.embedding.weight
    codes = torch.cdist(features.detach().permute(0, 2, 3, 1).reshape(-1, 4), codebook).argmin(1)
    assert torch.allclose(z.detach().permute(0, 2, 3, 1).reshape(-1, 4), codebook[codes].detach(), atol=1e-6)
    upstream = torch.randn_like(z)
    (z * upstream).sum().backward()
    assert torch.equal(features.grad, upstream)  # the straight-through estimator: dz/dfeatures = 1
    codebook.grad = None
    terms["latent"].backward()
    rows_with_gradient = set(codebook.grad.abs().sum(1).nonzero().flatten().tolist())
    assert rows_with_gradient == set(codes.tolist())  # the codebook term moves the chosen codes alone
    assert terms["codebook_usage"] == pytest.approx(len(set(codes.tolist())) / 16)


def test_vq_reseeds_codes_unused_for_reseed_steps_from_encoder_outputs():
    torch.manual_seed(0)
    vq = CodebookLatent(tiny_config(latent_regularizer="vq", codebook_size=8, latent_channels=2, vq_reseed_steps=3))
    with torch.no_grad():
        vq.quantizer.embedding.weight.copy_(torch.arange(8.0)[:, None].repeat(1, 2) * 100)  # codes far apart
    features = torch.full((1, 2, 2, 2), 0.1)  # always nearest code 0
    for _ in range(2):
        vq(features)
    assert vq.steps_unused.tolist() == [0] + [2] * 7
    assert torch.equal(vq.quantizer.embedding.weight[1:, 0], torch.arange(1.0, 8.0) * 100)  # not yet
    vq(features)  # the third step without codes 1..7
    weight = vq.quantizer.embedding.weight
    assert torch.allclose(weight[1:], torch.full((7, 2), 0.1))  # re-seeded onto encoder outputs
    assert vq.steps_unused.tolist() == [0] * 8
    vq.eval()
    vq(torch.full((1, 2, 2, 2), 500.0))
    assert vq.steps_unused.tolist() == [0] * 8  # inference counts nothing


def test_kl_term_matches_a_hand_computation():
    config = tiny_config(latent_regularizer="kl", latent_channels=4)
    gaussian = GaussianLatent(config)
    with torch.no_grad():  # every latent value: mean 1, log-variance log 2
        gaussian.moments.weight.zero_()
        gaussian.moments.bias.copy_(torch.tensor([1.0] * 4 + [math.log(2.0)] * 4))
    z, terms = gaussian(torch.zeros(3, 4, 7, 7))
    per_value = 0.5 * (1.0**2 + 2.0 - 1 - math.log(2.0))  # KL(N(1, 2) ‖ N(0, 1))
    assert terms["latent"].item() == pytest.approx(per_value * 4 * 7 * 7 / (3 * 28 * 28))
    assert not torch.equal(z, torch.ones_like(z))  # training samples
    gaussian.eval()
    assert torch.equal(gaussian(torch.zeros(3, 4, 7, 7))[0], torch.ones(3, 4, 7, 7))  # inference: the mean


def test_adaptive_weight_matches_a_hand_computation_on_a_tiny_decoder():
    torch.manual_seed(0)
    decoder = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    last = decoder[2].weight
    x, target = torch.randn(5, 3), torch.randn(5, 2)
    hidden = decoder[1](decoder[0](x)).detach()
    out = decoder(x)
    reconstruction = (out - target).abs().mean()
    adversarial = -(out * torch.tensor([0.3, -2.0])).mean()
    # By hand: d/dW of mean|Wh + b − t| is sign(out − t)ᵀ h / N; of −mean(out·c) it is −cᵀ h̄ / N.
    rec_grad = torch.sign(out - target).detach().t() @ hidden / out.numel()
    adv_grad = -(torch.tensor([0.3, -2.0])[:, None] * hidden.sum(0)[None]) / out.numel()
    expected = rec_grad.norm() / (adv_grad.norm() + 1e-4)
    assert adaptive_weight(reconstruction, adversarial, last) == pytest.approx(expected.item(), rel=1e-5)
    assert adaptive_weight(100 * reconstruction, 0 * adversarial, last) == 1e4  # no adversarial gradient: clamped


def test_the_autoencoder_stage_comes_first_trains_its_parts_and_freezes_them_after():
    weights = {"contrastive": 1.0, "reconstruction": 0.5, "latent": 1e-6, "fast_path": 0.5, "caption": 1.0,
               "diffusion": 0.1}
    config = TrainConfig(autoencoder_epochs=2, epochs=1, diffusion_epochs=1, perceptual_weight=1.0,
                         adversarial_weight=0.5, autoencoder_learning_rate=1e-3)
    autoencoder, encoders, diffusion = plan_stages(config, 10, weights)
    assert [(s.name, s.first_step, s.end_step) for s in (autoencoder, encoders, diffusion)] == [
        ("autoencoder", 0, 20), ("encoders", 20, 30), ("diffusion", 30, 40)]
    assert autoencoder.loss_weights == {"reconstruction": 1.0, "latent": 1e-6, "perceptual": 1.0, "adversarial": 0.5}
    assert autoencoder.peak_learning_rate == 1e-3
    for name in ("image_encoder.backbone.layers.0.weight", "image_encoder.regularizer.moments.weight",
                 "image_decoder.layers.0.weight"):
        assert autoencoder.is_trained(name) and not encoders.is_trained(name), name
    assert not autoencoder.is_trained("image_encoder.head.reduce.weight") and encoders.is_trained("image_encoder.head.reduce.weight")
    assert not autoencoder.is_trained("image_decoder.embedding_to_latent.0.weight")
    assert "reconstruction" not in encoders.loss_weights and "latent" not in encoders.loss_weights
    assert plan_stages(TrainConfig(autoencoder_epochs=1, adversarial_weight=0, perceptual_weight=0), 10,
                       weights)[0].loss_weights == {"reconstruction": 1.0, "latent": 1e-6}


@pytest.mark.parametrize("regularizer", ["kl", "vq"])
def test_the_autoencoder_stage_trains_and_resumes_mid_stage_exactly(shapes_dir, tmp_path, regularizer):
    def trainer(output, resume=False):
        torch.manual_seed(0)
        return Trainer(
            tiny_config(freeze_bert=True, latent_regularizer=regularizer, codebook_size=32, vq_reseed_steps=2),
            TrainConfig(preset="shapes", data_dir=str(shapes_dir), output_dir=str(output), autoencoder_epochs=2,
                        epochs=1, max_steps=6, batch_size=8, num_workers=0, sample_every_epoch=False,
                        discriminator_start=2, discriminator_width=8),
            resume=resume,
        )

    straight = run_recording(trainer(tmp_path / "straight"))
    first = run_recording(trainer(tmp_path / "stopped"), stop_at=4)  # mid-stage, mid-epoch, discriminator on
    assert (tmp_path / "stopped" / "latest" / TRAINING_DISCRIMINATOR).is_file()
    resumed = trainer(tmp_path / "stopped", resume=True)
    assert resumed.step == 4 and resumed.objective.last_weight > 0
    second = run_recording(resumed)
    assert len(straight) == len(first) + len(second) == 6
    for expected, actual in zip(straight, first + second):
        assert actual.keys() == expected.keys()
        for name in expected:
            assert actual[name] == pytest.approx(expected[name], rel=1e-5, abs=1e-7), name
    assert {"rec", "latent", "perc", "adv", "disc", "adv_weight"} <= set(straight[-1])
    if regularizer == "vq":
        assert 0 < straight[-1]["codebook_usage"] <= 1 and straight[-1]["codebook_perplexity"] >= 1
    metrics = pd.read_csv(tmp_path / "straight" / "metrics.csv")
    assert list(metrics["stage"]) == ["autoencoder", "autoencoder"]
    # Validation weighs its losses as training does, the adversarial one by the last training λ
    # (training's epoch means mix each step's λ, so only validation's add up exactly).
    row = metrics.iloc[-1]
    latent_weight = 1e-6 if regularizer == "kl" else 1.0
    adversarial = 0.5 * row["val_adv_weight"] * row["val_adv"]
    total = row["val_rec"] + latent_weight * row["val_latent"] + row["val_perc"] + adversarial
    assert row["val_loss"] == pytest.approx(total, rel=1e-5)
    assert row["val_adv_weight"] == pytest.approx(straight[-1]["adv_weight"])
    assert "val_i2t_R@1" not in metrics  # the stage makes no embeddings


def test_the_discriminator_waits_for_its_start_step(shapes_dir, tmp_path):
    trainer = tiny_trainer(shapes_dir, tmp_path, autoencoder_epochs=1, epochs=1, max_steps=3, perceptual_weight=0,
                           discriminator_start=10, discriminator_width=8)
    before = {k: v.clone() for k, v in trainer.objective.discriminator.state_dict().items()}
    metrics = run_recording(trainer)
    assert all(m["adv_weight"] == 0 for m in metrics)
    after = trainer.objective.discriminator.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_14_by_14_latent_trains_a_step_with_attention_at_7_only(shapes_dir, tmp_path):
    config = tiny_config(image_size=28, latent_size=14, freeze_bert=True)
    trainer = Trainer(config, TrainConfig(preset="shapes", data_dir=str(shapes_dir), output_dir=str(tmp_path),
                                          max_steps=1, batch_size=8, num_workers=0, sample_every_epoch=False))
    unet = trainer.model.diffusion.unet
    assert [type(a).__name__ for a in unet.down_attention] == ["NoAttention", "AttentionBlock"]
    assert len(unet.downsample) == len(unet.upsample) == 1
    metrics = trainer.train_step([next(iter(trainer._loader(trainer.train_set, list(range(8)))))])
    assert math.isfinite(metrics["diff"])
    model = trainer.model.eval()
    images = model.generate_image_from_text(["a red circle"], generator=torch.Generator().manual_seed(0))
    assert images.shape == (1, 3, 28, 28)
    z = model.image_encoder.encode(random_images(1, 28))
    assert z.shape == (1, 32, 14, 14)


def test_attention_resolutions_must_be_levels_of_the_unet():
    assert tiny_config(image_size=56, latent_size=28, attention_resolutions="14,7").unet_levels == [28, 14, 7]
    with pytest.raises(ConfigError, match="attention_resolutions 14 is not a level of the UNet over a 7×7 latent"):
        tiny_config(attention_resolutions="14")
    with pytest.raises(ConfigError, match="comma-separated sides"):
        tiny_config(attention_resolutions="seven")


def test_a_one_level_model_without_a_regulariser_has_the_tensors_it_had_before():
    """Checkpoints written before regularisers and UNet levels existed still load."""
    names = set(GenerativeMultimodalModel(tiny_config()).state_dict())
    assert not any(part in name for name in names for part in ("regularizer", "downsample", "upsample"))
    assert {"diffusion.unet.down_attention.0.qkv.weight", "diffusion.unet.mid_attention.qkv.weight"} <= names


@pytest.mark.skipif(not COCO_MINI.is_dir(), reason="../shared/coco-mini is not present")
def test_train_py_runs_each_stage_on_real_photographs(tmp_path):
    result = train_in_process("--data-dir", str(COCO_MINI), "--output-dir", str(tmp_path), "--max-steps", "4",
                              "--autoencoder-epochs", "1", "--epochs", "1", "--diffusion-epochs", "1",
                              "--batch-size", "80", "--latent-regularizer", "vq", "--codebook-size", "64",
                              "--discriminator-width", "8", "--no-sample-every-epoch", *TINY_FLAGS)
    assert result.returncode == 0, result.stderr
    assert "autoencoder (1 steps) → encoders (1 steps) → diffusion (1 steps)" in result.stdout
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert list(metrics["stage"]) == ["autoencoder", "encoders", "diffusion"]
    assert metrics["val_codebook_usage"].notna().all()
