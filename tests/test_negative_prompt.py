"""Negative prompts: classifier-free guidance steers away from the negative prompt's condition
instead of the null one."""

from __future__ import annotations

import runpy

import pytest
import torch

from PIL import Image

from conftest import REPO
from multimodal.config import SamplingConfig
from multimodal.errors import InvalidInputError


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


def test_the_pipeline_call_gives_a_flat_prompt_major_list_as_diffusers_does(generator):
    def draw(**options):
        return generator(["a red circle", "a blue square"], num_inference_steps=3, guidance_scale=2.0,
                         num_images_per_prompt=2, generator=torch.Generator().manual_seed(0), **options).images

    plain = draw()
    nested = generator.generate_from_text(["a red circle", "a blue square"], 2, num_inference_steps=3,
                                          guidance_scale=2.0, generator=torch.Generator().manual_seed(0))
    assert len(plain) == 4 and all(image.size == (28, 28) for image in plain)
    assert [image.tobytes() for image in plain] == [image.tobytes() for row in nested for image in row]
    steered = draw(negative_prompt="a green triangle")
    assert [a.tobytes() != b.tobytes() for a, b in zip(steered, plain)] == [True] * 4
    one_each = draw(negative_prompt=["a green triangle", ""])
    assert [image.tobytes() for image in one_each] == [image.tobytes() for image in steered[:2] + plain[2:]]


def test_a_wrong_number_of_negative_prompts_is_one_message(generator):
    with pytest.raises(InvalidInputError, match="3 negative prompts for 2 prompts: give one, or one each"):
        generator(["a red circle", "a blue square"], negative_prompt=["a", "b", "c"])


def test_the_command_line_and_the_page_take_a_negative_prompt(generator, checkpoint, tmp_path, capsys, monkeypatch):
    from multimodal.app import Demo
    from multimodal.config import ServeConfig

    monkeypatch.chdir(tmp_path)
    main = runpy.run_path(str(REPO / "generate_t2i.py"))["main"]
    args = ["a red circle", "--checkpoint", str(checkpoint), "--steps", "3", "--seed", "0"]
    assert main([*args, "--negative-prompt", "a blue square", "--output", "steered.png"]) == 0
    options = dict(num_inference_steps=3, seed=0)
    expected = generator.text_to_image("a red circle", negative_prompt="a blue square", **options)
    assert Image.open(tmp_path / "steered.png").tobytes() == expected.tobytes()
    assert expected.tobytes() != generator.text_to_image("a red circle", **options).tobytes()
    with pytest.raises(SystemExit) as stopped:
        main([*args, "--no-diffusion", "--negative-prompt", "a blue square"])
    assert stopped.value.code == 2 and "--negative-prompt steers diffusion" in capsys.readouterr().err

    demo = Demo(generator, ServeConfig(), None)
    page = demo.text_to_image("a red circle", 3, generator.sampling.guidance_scale, generator.sampling.sampler, 0, 1,
                              False, 1, "a blue square")
    assert page[0].tobytes() == generator.text_to_image("a red circle", negative_prompt="a blue square", **options,
                                                        sampler=generator.sampling.sampler).tobytes()
