"""Negative prompts: classifier-free guidance steers away from the negative prompt's condition
instead of the null one."""

from __future__ import annotations

import torch

from multimodal.config import SamplingConfig


def test_guidance_steers_away_from_the_negative_prompts_condition(generator):
    model = generator.model
    diffusion = model.diffusion
    both = model.text_condition(["a red circle", "a blue square"])
    condition, negative = zip(*(part.chunk(2) for part in both))
    x = torch.randn(1, model.config.latent_channels, 7, 7, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(50)
    with torch.no_grad():
        conditional = diffusion.unet(x, t.expand(1), *condition)
        away = diffusion.unet(x, t.expand(1), *negative)
        guided = diffusion.guided_prediction(x, t, diffusion.guidance_condition(condition, 3.0, negative), 3.0, 0.0)
        alone = diffusion.guided_prediction(x, t, diffusion.guidance_condition(condition, 0.0, negative), 0.0, 0.0)
    torch.testing.assert_close(guided, away + 3.0 * (conditional - away))
    torch.testing.assert_close(alone, away)


def test_an_empty_negative_prompt_is_none_and_another_changes_the_picture(generator):
    model = generator.model
    sampling = SamplingConfig(num_inference_steps=4, guidance_scale=3.0)

    def draw(negative_prompts):
        return model.generate_image_from_text(["a red circle", "a blue square"], sampling,
                                              torch.Generator().manual_seed(0), negative_prompts=negative_prompts)

    with torch.no_grad():
        plain, empty = draw(None), draw(["", " "])
        mixed = draw(["a blue square", ""])
    torch.testing.assert_close(empty, plain, atol=1e-5, rtol=0)
    assert (mixed[0] - plain[0]).abs().max() > 1e-3  # its negative prompt moved the first picture
    torch.testing.assert_close(mixed[1], plain[1], atol=1e-5, rtol=0)  # and the second had none
