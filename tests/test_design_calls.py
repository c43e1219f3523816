"""The design documents' own calls (issue 38): the model-level calls in their words, the renamed
keywords of ImageTextGenerator, unconditional generation and image-to-image (SDEdit)."""

from __future__ import annotations

import runpy

import pytest
import torch
from PIL import Image

from conftest import REPO, random_images, tiny_config
from multimodal import GenerativeMultimodalModel, ImageTextGenerator
from multimodal.config import SamplingConfig
from multimodal.data.transforms import to_pil
from multimodal.errors import ConfigError, InvalidInputError
from multimodal.models import LatentDiffusion, LatentDiffusionUNet

PROMPTS = ["a red circle", "a blue square"]


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def in_range(images: torch.Tensor) -> bool:
    return bool(images.min() >= -1 and images.max() <= 1 and torch.isfinite(images).all())


# -- the model-level calls --------------------------------------------------------------------
def test_generate_image_from_text_takes_embeddings_and_sampling_field_names(generator):
    model = generator.model
    embeddings = model.encode_text(PROMPTS)
    drawn = model.generate_image_from_text(embeddings, num_inference_steps=3, generator=seeded())
    assert drawn.shape == (2, 3, 28, 28) and in_range(drawn)
    assert (drawn[0] - drawn[1]).abs().max() > 1e-3  # each row follows its own embedding and noise
    preview = model.generate_image_from_text(embeddings, use_diffusion=False)
    assert preview.shape == (2, 3, 28, 28) and in_range(preview)
    # the fast path from an embedding is the prompt's own fast path
    torch.testing.assert_close(preview, model.generate_image_from_text(PROMPTS, use_diffusion=False))
    # keywords and a SamplingConfig are one thing
    by_keyword = model.generate_image_from_text(PROMPTS, num_inference_steps=3, guidance_scale=2.0, generator=seeded())
    by_config = model.generate_image_from_text(PROMPTS, SamplingConfig(num_inference_steps=3, guidance_scale=2.0),
                                               seeded())
    assert torch.equal(by_keyword, by_config)
    with pytest.raises(ValueError, match="num_candidates judge or steer by a prompt's words"):
        model.generate_image_from_text(embeddings, num_candidates=2)
    with pytest.raises(ValueError, match="unknown SamplingConfig field 'num_inference_step'"):
        model.generate_image_from_text(PROMPTS, num_inference_step=3)


def test_generate_text_from_image_takes_images_or_embeddings(generator):
    model = generator.model
    images = random_images(2, 28)
    from_images = model.generate_text_from_image(images, max_new_tokens=4)
    from_embeddings = model.generate_text_from_image(model.encode_image(images), max_new_tokens=4)
    for captions in (from_images, from_embeddings):
        assert len(captions) == 2 and all(isinstance(caption, str) and caption for caption in captions)
    # an embedding is captioned through the fast path's latent
    latents = model.image_decoder.get_latent_from_embedding(model.encode_image(images))
    assert from_embeddings == model.generate_text_from_latent(latents, max_new_tokens=4)
    with pytest.raises(ValueError, match=r"expected embeddings \(B, 32\)"):
        model.generate_text_from_image(torch.zeros(2, 5))


def test_compute_diffusion_loss_takes_images_or_latents_with_embeddings_or_token_ids(generator):
    model = generator.model
    images = random_images(2, 28)
    tokens = model.text_encoder.tokenize(PROMPTS)
    latents = model.encode_latent(images)
    losses = [
        model.compute_diffusion_loss(images, model.encode_text(PROMPTS)),
        model.compute_diffusion_loss(latents, model.encode_text(PROMPTS)),
        model.compute_diffusion_loss(latents, tokens["input_ids"]),
    ]
    for loss in losses:
        assert loss.dim() == 0 and torch.isfinite(loss) and loss > 0
    torch.manual_seed(1)  # the same noise and timesteps: ids without a mask are the old call with one
    documents = model.compute_diffusion_loss(images, tokens["input_ids"])
    torch.manual_seed(1)
    ours = model.compute_diffusion_loss(images, tokens["input_ids"], tokens["attention_mask"])
    assert documents.item() == pytest.approx(ours.item(), rel=1e-6)
    with pytest.raises(ValueError, match=r"expected images \(B, 3, 28, 28\) or latents"):
        model.compute_diffusion_loss(torch.zeros(2, 3, 8, 8), tokens["input_ids"])


def test_latent_diffusion_unet_is_built_from_the_design_keywords():
    torch.manual_seed(0)
    unet = LatentDiffusionUNet(latent_channels=256, latent_size=7, condition_dim=512, num_timesteps=1000)
    assert isinstance(unet, LatentDiffusion)
    c = unet.config
    assert (c.latent_channels, c.latent_size, c.embed_dim, c.num_timesteps, c.image_size) == (256, 7, 512, 1000, 224)
    latents, embedding = torch.randn(2, 256, 7, 7), torch.randn(2, 512)
    context, mask = torch.randn(2, 3, 512), torch.ones(2, 3, dtype=torch.long)
    loss = unet.training_loss(latents, embedding, context, mask)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert LatentDiffusionUNet(latent_channels=8, latent_size=8, condition_dim=16, unet_width=32,
                               unet_heads=2).config.image_size == 256
    with pytest.raises(TypeError, match="not both"):
        LatentDiffusionUNet(c, latent_size=7)


def test_latent_diffusion_is_the_models_diffusion(generator):
    assert generator.model.latent_diffusion is generator.model.diffusion


def test_the_renamed_keywords_of_the_generator(generator, tmp_path):
    options = dict(num_inference_steps=2, seed=0)
    renamed = generator.generate_from_text(PROMPTS, num_samples_per_prompt=2, **options)
    ours = generator.generate_from_text(PROMPTS, num_images_per_prompt=2, **options)
    assert [len(row) for row in renamed] == [2, 2]
    assert [i.tobytes() for row in renamed for i in row] == [i.tobytes() for row in ours for i in row]
    with pytest.raises(InvalidInputError, match="num_samples_per_prompt is another name for num_images_per_prompt"):
        generator.generate_from_text(PROMPTS, num_images_per_prompt=3, num_samples_per_prompt=2)
    path = tmp_path / "picture.png"
    to_pil(random_images(1, 28)[0]).save(path)
    captions = generator.generate_from_image(image_paths=[path], max_new_tokens=4)
    assert captions == generator.generate_from_image([path], max_new_tokens=4)
    assert len(captions) == 1 and isinstance(captions[0][0], str)
    with pytest.raises(InvalidInputError, match="image_paths is another name for images"):
        generator.generate_from_image([path], image_paths=[path])


# -- unconditional generation -----------------------------------------------------------------
def test_unconditional_samples_differ_from_each_other_and_repeat_per_seed(generator):
    first = generator.generate_unconditional(3, seed=0, num_inference_steps=3)
    assert len(first) == 3 and all(isinstance(image, Image.Image) and image.size == (28, 28) for image in first)
    pixels = [image.tobytes() for image in first]
    assert len(set(pixels)) == 3
    assert [image.tobytes() for image in generator.generate_unconditional(3, seed=0, num_inference_steps=3)] == pixels
    assert [image.tobytes() for image in generator.generate_unconditional(3, seed=1, num_inference_steps=3)] != pixels
    # drawn from the null condition, guidance 1: what the model draws for no text
    model = generator.model
    expected = model.diffusion.sample(model.diffusion.null_condition(3, 1), SamplingConfig(num_inference_steps=3,
                                      guidance_scale=1.0), seeded(0))
    decoded = model.image_decoder.decode_from_latent(expected).clamp(-1, 1)
    assert pixels == [to_pil(image).tobytes() for image in decoded]
    with pytest.raises(InvalidInputError, match="guidance_scale steer toward a prompt"):
        generator.generate_unconditional(2, guidance_scale=3.0)


def test_an_unconditional_model_refuses_prompts_captions_and_embeddings(tmp_path, capsys, monkeypatch):
    GenerativeMultimodalModel(tiny_config().without_captions()).save_pretrained(tmp_path / "unconditional")
    generator = ImageTextGenerator(tmp_path / "unconditional", device="cpu")
    assert len(generator.generate_unconditional(1, seed=0, num_inference_steps=1)) == 1
    image = Image.new("RGB", (28, 28))
    for call in (lambda: generator.generate_from_text("a red circle"), lambda: generator.image_to_text(image),
                 lambda: generator.embed_texts(["a red circle"]), lambda: generator.similarity([image], ["a"])):
        with pytest.raises(InvalidInputError, match="this checkpoint is unconditional"):
            call()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "generate_t2i.py"))["main"](["a red circle", "--checkpoint", "unconditional"])
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err.strip()
    assert "drawing for a prompt needs a model trained on captions" in stderr and len(stderr.splitlines()) == 1
    assert not list(tmp_path.glob("*.png"))


# -- image-to-image -----------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpm"])
def test_image_to_image_strength_zero_is_the_reconstruction_and_one_is_text_to_image(generator, sampler):
    model = generator.model
    picture = to_pil(random_images(1, 28, seed=3)[0])
    options = dict(num_inference_steps=4, sampler=sampler, seed=5)
    kept = generator.image_to_image(picture, "a red circle", strength=0.0, **options)
    with torch.no_grad():
        pixels = generator.transform(picture)[None]
        reconstruction = to_pil(model.image_decoder.decode_from_latent(model.encode_latent(pixels)).clamp(-1, 1)[0])
    assert kept.tobytes() == reconstruction.tobytes()
    ignored = generator.image_to_image(picture, "a red circle", strength=1.0, **options)
    assert ignored.tobytes() == generator.text_to_image("a red circle", **options).tobytes()
    halfway = generator.image_to_image(picture, "a red circle", strength=0.5, **options)
    assert halfway.tobytes() not in (kept.tobytes(), ignored.tobytes())


def test_image_to_image_noises_the_latent_with_the_schedulers_add_noise(generator):
    """With one step left (strength 1/4 of 4), the UNet sees the scheduler's add_noise of the latent."""
    model = generator.model
    images = random_images(1, 28, seed=3)
    seen = []
    hook = model.diffusion.unet.register_forward_hook(lambda module, inputs, output: seen.append(inputs[:2]))
    try:
        model.generate_image_from_text(["a red circle"], num_inference_steps=4, guidance_scale=1.0, generator=seeded(2),
                                       init_images=images, strength=0.25)
    finally:
        hook.remove()
    from multimodal.models.diffusion import make_scheduler

    scheduler = make_scheduler("ddim", model.config)
    scheduler.set_timesteps(4)
    t = scheduler.timesteps[-1:]
    noise = torch.randn(1, model.config.latent_channels, 7, 7, generator=seeded(2))
    expected = scheduler.add_noise(model.diffusion.normalize(model.encode_latent(images)), noise, t)
    assert len(seen) == 1 and seen[0][1].tolist() == t.tolist()
    torch.testing.assert_close(seen[0][0], expected)


def test_a_strength_outside_zero_to_one_is_refused(generator):
    picture = to_pil(random_images(1, 28)[0])
    for strength in (1.5, -0.1, float("nan")):
        with pytest.raises(ConfigError, match=r"strength must be in \[0, 1\]"):
            generator.image_to_image(picture, "a red circle", strength=strength)
    with pytest.raises(InvalidInputError, match="give init_image too"):
        generator.generate_from_text(PROMPTS, strength=0.5)


# -- the command line ---------------------------------------------------------------------------
@pytest.fixture
def t2i(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    return runpy.run_path(str(REPO / "generate_t2i.py"))["main"]


def test_the_command_line_draws_unconditionally(t2i, checkpoint, tmp_path, capsys):
    common = ["--checkpoint", str(checkpoint), "--steps", "2", "--seed", "0", "--quiet"]
    assert t2i(["--unconditional", "--num-samples", "2", "--output", "out/", *common]) == 0
    written = sorted((tmp_path / "out").iterdir())
    assert [path.name for path in written] == ["unconditional_0.png", "unconditional_1.png"]
    assert Image.open(written[0]).tobytes() != Image.open(written[1]).tobytes()


def test_the_command_line_redraws_an_init_image(t2i, checkpoint, generator, tmp_path):
    to_pil(random_images(1, 28, seed=3)[0]).save(tmp_path / "x.png")
    args = ["a red circle", "--init-image", "x.png", "--strength", "0.5", "--checkpoint", str(checkpoint),
            "--steps", "4", "--seed", "1", "--quiet", "--output", "redrawn.png"]
    assert t2i(args) == 0
    expected = generator.image_to_image(tmp_path / "x.png", "a red circle", strength=0.5, num_inference_steps=4, seed=1)
    assert Image.open(tmp_path / "redrawn.png").tobytes() == expected.tobytes()


@pytest.mark.parametrize("args, message", [
    (["a red circle", "--init-image", "x.png", "--strength", "1.5"], "argument --strength: must be in [0, 1], got 1.5"),
    (["a red circle", "--unconditional"], "--unconditional draws without a prompt"),
    ([], "the following arguments are required: PROMPT (or --unconditional)"),
    (["a red circle", "--strength", "0.5"], "give --init-image too"),
    (["--unconditional", "--guidance-scale", "3"], "--guidance-scale steer toward a prompt"),
    (["a red circle", "--init-image", "missing.png"], "--init-image missing.png: no such file"),
])
def test_bad_image_to_image_and_unconditional_flags_are_one_line_exit_2(t2i, checkpoint, tmp_path, capsys, args,
                                                                         message):
    to_pil(random_images(1, 28)[0]).save(tmp_path / "x.png")
    with pytest.raises(SystemExit) as exit_info:
        t2i([*args, "--checkpoint", str(checkpoint)])
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert len(stderr.strip().splitlines()) == 1 and message in stderr
    assert not list(tmp_path.glob("generated*"))
