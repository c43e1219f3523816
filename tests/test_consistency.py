"""The UNet learning from the caption decoder (issue 34): the caption-consistency term of the
diffusion stage, and caption guidance at sampling."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from conftest import run_recording, run_train, tiny_config, tiny_trainer, TINY_FLAGS

from multimodal import GenerativeMultimodalModel
from multimodal.config import SamplingConfig, TrainConfig
from multimodal.errors import ConfigError
from multimodal.models.diffusion import make_scheduler
from multimodal.training.stages import plan_stages

PROMPTS = ["a red circle", "a blue square", "a green triangle", "a red square"]


@pytest.mark.parametrize("prediction_type", ["epsilon", "v", "sample"])
def test_the_predicted_clean_latent_is_the_schedulers_own(prediction_type):
    torch.manual_seed(0)
    model = GenerativeMultimodalModel(tiny_config(prediction_type=prediction_type, num_timesteps=1000))
    scheduler = make_scheduler("ddim", model.config)
    scheduler.set_timesteps(10)
    noisy, prediction = torch.randn(2, 32, 7, 7), torch.randn(2, 32, 7, 7)
    for t in scheduler.timesteps[[0, 4, 9]]:
        expected = scheduler.step(prediction, t, noisy).pred_original_sample
        torch.testing.assert_close(model.diffusion.predicted_clean(noisy, prediction, t), expected)


def diffusion_stage(model: GenerativeMultimodalModel, **train):
    config = TrainConfig(epochs=1, diffusion_epochs=1, **train)
    return plan_stages(config, steps_per_epoch=4, loss_weights=model.loss_weights())[-1]


def test_the_term_trains_the_unet_through_the_frozen_caption_decoder_and_nothing_else():
    torch.manual_seed(0)
    model = GenerativeMultimodalModel(tiny_config()).train()
    stage = diffusion_stage(model, consistency_weight=0.5)
    assert stage.name == "diffusion" and stage.loss_weights["consistency"] == 0.5
    stage.apply(model, {name for name, _ in model.named_parameters()})
    tokens = model.text_encoder.tokenize(PROMPTS)
    images = torch.rand(4, 3, 28, 28) * 2 - 1
    out = model(images, tokens["input_ids"], tokens["attention_mask"], loss_weights={"consistency": 1.0})
    assert out["consistency"] > 0 and out["loss"] == out["consistency"]
    out["loss"].backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    unet = [g for name, g in grads.items() if name.startswith("diffusion.unet.")]
    assert all(g is not None for g in unet) and sum(g.abs().sum() for g in unet) > 0
    frozen = [name for name, g in grads.items() if not name.startswith(stage.trains) and g is not None]
    assert frozen == []
    assert model.caption_decoder.training  # its eval mode as a judge was only for the loss


def test_rows_whose_caption_was_dropped_and_noisy_steps_count_less():
    torch.manual_seed(0)
    model = GenerativeMultimodalModel(tiny_config(prediction_type="sample")).eval()
    tokens = model.text_encoder.tokenize(PROMPTS[:2])
    states, embedding = model.text_encoder(**tokens)
    z = torch.randn(2, 32, 7, 7)
    ask = dict(noise=torch.randn_like(z), timesteps=torch.tensor([5, 90]))

    def consistency(dropped):
        step = model.diffusion.training_step(z, embedding, states, tokens["attention_mask"],
                                             drop=torch.tensor(dropped), **ask)
        return model.consistency_loss(step, tokens["input_ids"], tokens["attention_mask"])

    only_first, only_second = consistency([False, True]), consistency([True, False])
    both = consistency([False, False])
    weights = model.diffusion.signal_level(ask["timesteps"])
    assert weights[0] > 0.9 > 0.1 > weights[1]  # a low-noise step counts far more than a noisy one
    expected = (weights[0] * only_first + weights[1] * only_second) / weights.sum()
    assert both.item() == pytest.approx(expected.item(), rel=1e-5)


def test_off_by_default_and_refused_where_nothing_trained_judges_it():
    model = GenerativeMultimodalModel(tiny_config())
    assert "consistency" not in diffusion_stage(model).loss_weights
    with pytest.raises(ConfigError, match="consistency_weight.*--diffusion-epochs"):
        TrainConfig(consistency_weight=1.0)  # joint training: the decoder is not trained before the UNet
    untrained = GenerativeMultimodalModel(tiny_config(caption_weight=0.0))
    with pytest.raises(ConfigError, match="caption decoder"):
        diffusion_stage(untrained, consistency_weight=1.0)


def test_the_command_line_refuses_it_in_one_line_without_a_diffusion_stage(tmp_path):
    result = run_train(*TINY_FLAGS, "--consistency-weight", "1", "--output-dir", str(tmp_path / "run"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "--diffusion-epochs" in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_tiny_run_trains_and_resumes_with_the_term(shapes_dir, tmp_path):
    options = dict(epochs=1, diffusion_epochs=1, consistency_weight=0.5, batch_size=8)
    trainer = tiny_trainer(shapes_dir, tmp_path / "straight", **options)
    weights = trainer.stages[-1].loss_weights
    straight = run_recording(trainer)
    first = run_recording(tiny_trainer(shapes_dir, tmp_path / "stopped", **options), stop_at=4)
    second = run_recording(tiny_trainer(shapes_dir, tmp_path / "stopped", resume=True, **options))
    assert len(straight) == len(first) + len(second) == 6
    assert "consist" not in straight[0] and straight[-1]["consist"] > 0  # the diffusion stage's steps
    for expected, actual in zip(straight, first + second):
        assert actual["loss"] == pytest.approx(expected["loss"], rel=1e-4, abs=1e-5)
    metrics = pd.read_csv(tmp_path / "straight" / "metrics.csv")
    last = metrics.iloc[-1]
    assert last["stage"] == "diffusion" and last["val_consist"] > 0
    assert weights["consistency"] == 0.5  # validation weighs the term as training does
    total = last["val_diff"] + 0.5 * last["val_consist"] + weights["fast_path"] * last["val_fast"]
    assert last["val_loss"] == pytest.approx(total, rel=1e-5)


def test_caption_guidance_at_zero_draws_the_same_pictures_and_above_zero_moves_them(generator):
    model, prompts = generator.model, PROMPTS[:2]

    def draw(**options):
        sampling = SamplingConfig(num_inference_steps=4, **options)
        return model.generate_image_from_text(prompts, sampling, torch.Generator().manual_seed(3))

    plain = draw()
    assert torch.equal(draw(caption_guidance=0.0), plain)
    guided = draw(caption_guidance=50.0)
    first_step_only = draw(caption_guidance=50.0, caption_guidance_steps=1)
    assert not torch.equal(guided, plain) and not torch.equal(first_step_only, guided)
    with pytest.raises(ConfigError, match="caption_guidance"):
        SamplingConfig(caption_guidance=-1.0)
