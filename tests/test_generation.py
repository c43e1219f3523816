"""ImageTextGenerator and the two command lines, on a tiny random checkpoint.

The weights are untrained, so these tests check behaviour (reproducibility, batching,
guidance, decoding options, clean text, errors), not the quality of what comes out.
"""

from __future__ import annotations

import io
import json
import logging
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_in_process, script_main
from multimodal import ImageTextGenerator, SamplingConfig
from multimodal.device import autocast_dtype
from multimodal.errors import InvalidInputError, PromptTruncatedWarning, SlowPrecisionWarning
from multimodal.generation import decoding_options
from multimodal.captions import clean_caption
from multimodal.images import slugify

ROOT = Path(__file__).resolve().parents[1]
COCO_VAL = ROOT.parent / "shared" / "coco-mini" / "val2017"
SPECIAL_TEXT = ("[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]", "[unused", "##")


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("images") / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(path)
    return path


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# -- text → image -------------------------------------------------------------------------
def test_same_seed_gives_the_same_png_bytes_and_another_seed_does_not(generator):
    def draw(seed):
        return png_bytes(generator.text_to_image("a red circle", num_inference_steps=4, seed=seed))

    assert draw(0) == draw(0)
    assert draw(0) != draw(1)


def test_guidance_one_is_the_conditional_prediction_and_zero_the_unconditional(generator):
    model = generator.model
    diffusion = model.diffusion
    condition = model.text_condition(["a red circle", "a blue square"])
    x = torch.randn(2, model.config.latent_channels, 7, 7, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(50)
    with torch.no_grad():
        conditional = diffusion.unet(x, t.expand(2), *condition)
        unconditional = diffusion.unet(x, t.expand(2), *diffusion.null_condition(2, condition[1].shape[1]))
        guided = {
            scale: diffusion.guided_prediction(x, t, diffusion.guidance_condition(condition, scale), scale, 0.0)
            for scale in (0.0, 1.0, 3.0)
        }
    assert not torch.allclose(conditional, unconditional)
    torch.testing.assert_close(guided[1.0], conditional)
    torch.testing.assert_close(guided[0.0], unconditional)
    torch.testing.assert_close(guided[3.0], unconditional + 3.0 * (conditional - unconditional))


def test_sampling_projects_the_text_once_and_steps_as_the_unet_does_with_it(generator):
    """The text's FiLM share and the cross-attention keys/values are computed once per picture,
    not at every step, and a step with them remembered is the UNet's forward to the bit."""
    model = generator.model
    unet = model.diffusion.unet
    calls = []
    hooks = [module.register_forward_hook(lambda *_: calls.append(1)) for module in (unet.text_embedding,
             *(attention.cross_kv for attention in unet.modules() if hasattr(attention, "cross_kv")))]
    try:
        model.generate_image_from_text(["a red circle"], num_inference_steps=4, guidance_scale=3.0)
    finally:
        for hook in hooks:
            hook.remove()
    assert len(calls) == len(hooks)  # once each, for 4 steps
    condition = model.diffusion.stacked_condition(model.text_condition(["a red circle"]))
    x = torch.randn(2, model.config.latent_channels, 7, 7, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        step = unet(x, torch.tensor([10, 10]), memory=unet.remember(*condition))
        assert torch.equal(step, unet(x, torch.tensor([10, 10]), *condition))


@pytest.mark.parametrize("sampler, eta", [("ddim", 1.0), ("ddpm", 0.0), ("dpm", 0.0)])
def test_every_sampler_runs(generator, sampler, eta):
    image = generator.text_to_image("a blue square", num_inference_steps=3, sampler=sampler, eta=eta, seed=0)
    assert image.size == (28, 28) and image.mode == "RGB"


def test_guidance_rescale_pulls_the_guided_spread_back_to_the_conditional_one(generator):
    diffusion = generator.model.diffusion
    condition = generator.model.text_condition(["a red circle"])
    x = torch.randn(1, generator.model.config.latent_channels, 7, 7, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(30)
    with torch.no_grad():
        both = diffusion.guidance_condition(condition, 5.0)
        plain = diffusion.guided_prediction(x, t, both, 5.0, 0.0)
        rescaled = diffusion.guided_prediction(x, t, both, 5.0, 1.0)
        conditional = diffusion.unet(x, t.expand(1), *condition)
    torch.testing.assert_close(rescaled.std(), conditional.std())
    torch.testing.assert_close(rescaled, plain * conditional.std() / plain.std())


def test_a_sampling_config_and_diffusers_names_work(generator):
    config = SamplingConfig(num_inference_steps=3, guidance_scale=2.0)
    by_config = generator.generate_from_text("a red circle", sampling=config, seed=0)[0][0]
    by_names = generator.generate_from_text(
        "a red circle", num_inference_steps=3, guidance_scale=2.0, generator=torch.Generator().manual_seed(0)
    )[0][0]
    assert png_bytes(by_config) == png_bytes(by_names)
    assert len(generator.generate_from_text(["a"], num_images_per_prompt=3, use_diffusion=False)[0]) == 3
    with pytest.raises(InvalidInputError, match="unknown option 'guidance' \\(did you mean guidance_scale\\?\\)"):
        generator.generate_from_text("a red circle", guidance=7)
    with pytest.raises(InvalidInputError, match="seed or generator"):
        generator.generate_from_text("a", seed=0, generator=torch.Generator())
    with pytest.raises(InvalidInputError, match="one prompt; for several, use generate_from_text"):
        generator.text_to_image(["a red circle", "a blue square"])


def test_fast_preview_without_diffusion(generator):
    images = generator.generate_from_text(["a red circle"], num_images_per_prompt=2, use_diffusion=False)
    assert png_bytes(images[0][0]) == png_bytes(images[0][1])  # no noise: the embedding decides


def test_prompts_and_samples_are_batched_and_saved(generator, tmp_path):
    prompts = ["a red circle", "一只猫 🐱", "A red circle!"]
    images = generator.generate_from_text(prompts, num_images_per_prompt=2, num_inference_steps=3, seed=0)
    assert [len(samples) for samples in images] == [2, 2, 2]
    assert png_bytes(images[0][0]) != png_bytes(images[0][1])

    singles = generator.batch_text_to_image(prompts, save_dir=tmp_path, num_inference_steps=3, seed=0)
    assert len(singles) == 3
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == ["a-red-circle-2_0.png", "a-red-circle_0.png", "一只猫_0.png"]  # same slug: no overwrite


def test_text_to_image_writes_a_png(generator, tmp_path):
    path = tmp_path / "sub" / "out.png"
    image = generator.text_to_image("a green triangle", num_inference_steps=2, seed=0, save_path=path)
    assert Image.open(path).format == "PNG"
    assert png_bytes(Image.open(path)) == png_bytes(image)


def test_a_too_long_prompt_is_truncated_with_a_warning(generator):
    with pytest.warns(PromptTruncatedWarning, match="only the first 16"):
        generator.text_to_image("word " * 50, use_diffusion=False)


@pytest.mark.parametrize(
    "options",
    [dict(num_inference_steps=0), dict(num_inference_steps=10_000), dict(guidance_scale=-1.0), dict(sampler="euler")],
)
def test_bad_sampling_options_are_refused(generator, options):
    with pytest.raises(InvalidInputError):
        generator.text_to_image("a red circle", **options)


@pytest.mark.parametrize("prompt", ["", "   \n"])
def test_an_empty_prompt_is_refused(generator, prompt):
    with pytest.raises(InvalidInputError, match="must not be empty"):
        generator.text_to_image(prompt)


# -- precision ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "precision, device, training, dtype",
    [
        ("auto", "cpu", False, None), ("auto", "cuda", False, torch.bfloat16), ("fp32", "cuda", False, None),
        ("bf16", "cpu", False, torch.bfloat16), ("fp16", "cpu", False, torch.float16),
        ("fp16", "cuda", False, torch.float16), ("auto", "cuda", True, torch.bfloat16),
    ],
)  # fmt: skip
def test_precision_picks_the_autocast_dtype(precision, device, training, dtype):
    assert autocast_dtype(precision, torch.device(device), training=training) is dtype


def test_auto_precision_is_fp32_on_the_cpu_and_reduced_precisions_stay_reproducible(generator, checkpoint):
    assert generator.dtype is None
    fp32 = generator.text_to_image("a red circle", seed=3, num_inference_steps=4)
    for precision in ("bf16", "fp16"):
        reduced = ImageTextGenerator(checkpoint, device="cpu", precision=precision)
        first = reduced.text_to_image("a red circle", seed=3, num_inference_steps=4)
        assert png_bytes(first) == png_bytes(reduced.text_to_image("a red circle", seed=3, num_inference_steps=4))
        difference = np.abs(np.asarray(first, dtype=int) - np.asarray(fp32, dtype=int))
        assert 0 < difference.max() <= 64, precision  # computed in another precision, yet the same picture
        assert reduced.embed_texts(["a red circle"]).dtype == torch.float32
        assert len(reduced.image_to_text(first, max_new_tokens=4)) > 0


def test_an_unknown_precision_is_refused(checkpoint):
    with pytest.raises(InvalidInputError, match="precision must be one of auto, fp32, bf16, fp16, got 'fp8'"):
        ImageTextGenerator(checkpoint, device="cpu", precision="fp8")


def test_bf16_on_a_cpu_without_bf16_units_says_it_is_emulated(checkpoint, monkeypatch):
    monkeypatch.setattr("multimodal.device.has_native_bf16", lambda: False)
    with pytest.warns(SlowPrecisionWarning, match="--precision bf16: this CPU has no bf16 units"):
        ImageTextGenerator(checkpoint, device="cpu", precision="bf16")


def test_slugify():
    assert slugify("A large red circle, on the LEFT!") == "a-large-red-circle-on-the-left"
    assert slugify("🐱🐶") == "prompt"
    assert len(slugify("word " * 100)) <= 60


# -- image → text -------------------------------------------------------------------------
def test_num_beams_one_equals_greedy(generator, photo):
    assert generator.image_to_text(photo, num_beams=1) == generator.image_to_text(photo)


def test_path_pil_image_and_array_give_the_same_caption(generator, photo):
    image = Image.open(photo)
    captions = [generator.image_to_text(source) for source in (photo, image, np.asarray(image))]
    assert captions[0] == captions[1] == captions[2]


def test_sampling_is_reproducible_with_a_seed_and_leaves_the_global_rng_alone(generator, photo):
    def sample(seed):
        return generator.generate_from_image([photo], num_captions_per_image=3, top_p=0.9, seed=seed)[0]

    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    first = sample(0)
    assert torch.equal(torch.rand(1), expected)
    assert sample(0) == first
    assert sample(1) != first
    assert len(first) == 3


@pytest.mark.parametrize(
    "options",
    [
        dict(),
        dict(num_beams=3, num_captions_per_image=2, repetition_penalty=1.3),
        dict(temperature=0.7, top_k=50, top_p=0.9, seed=0),
        dict(num_captions_per_image=2, seed=0),
    ],
)
def test_every_decoding_strategy_gives_clean_text_without_library_warnings(generator, photo, options):
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    transformers_logger = logging.getLogger("transformers")
    transformers_logger.addHandler(handler)
    try:
        captions = generator.generate_from_image([photo, photo], max_new_tokens=12, **options)
    finally:
        transformers_logger.removeHandler(handler)
    assert [record.getMessage() for record in records if record.levelno >= logging.WARNING] == []
    assert len(captions) == 2
    for caption in sum(captions, []):
        assert caption and caption == caption.strip()
        assert not any(token in caption for token in SPECIAL_TEXT), caption


def test_many_sampled_captions_never_hold_special_tokens(generator, photo):
    captions = generator.generate_from_image([photo], num_captions_per_image=20, temperature=2.0, seed=0)[0]
    assert all(caption and not any(token in caption for token in SPECIAL_TEXT) for caption in captions)


def test_decoding_options_pass_only_what_applies():
    assert decoding_options(1, {"temperature": None}) == {}
    assert decoding_options(1, {"num_beams": 4, "repetition_penalty": 1.3}) == {"num_beams": 4, "repetition_penalty": 1.3}
    assert decoding_options(1, {"temperature": 0.7}) == {"do_sample": True, "temperature": 0.7}
    assert decoding_options(3, {}) == {"do_sample": True, "num_return_sequences": 3}
    assert decoding_options(1, {"num_return_sequences": 3}) == {"do_sample": True, "num_return_sequences": 3}
    assert decoding_options(2, {"num_beams": 2}) == {"num_beams": 2, "num_return_sequences": 2}
    assert decoding_options(1, {"no_repeat_ngram_size": 2}) == {"no_repeat_ngram_size": 2}
    bad = [
        (1, {"temperature": 0.0}),
        (1, {"top_k": 0}),
        (1, {"top_p": 1.5}),
        (3, {"num_beams": 2}),  # more captions than beams
        (2, {"num_return_sequences": 3}),
        (1, {"top_pp": 0.9}),  # not a GenerationConfig option
        (1, {"eos_token_id": 5}),  # ours to set
    ]
    for count, options in bad:
        with pytest.raises(InvalidInputError):
            decoding_options(count, options)
    with pytest.raises(InvalidInputError, match="did you mean top_p"):
        decoding_options(1, {"top_pp": 0.9})


def test_clean_caption_drops_leftover_pieces_and_restores_normal_spacing():
    raw = "##s a man ' s t - shirt , on a ( red ) [unused7] bus ."
    assert clean_caption(raw) == "s a man's t-shirt, on a (red) bus."
    assert clean_caption("it is 3. 5 m long ! don ' t") == "it is 3.5 m long! don't"


@pytest.mark.parametrize(
    "make",
    [
        lambda: Image.new("RGB", (1, 1), (255, 0, 0)),
        lambda: Image.new("RGBA", (9, 5), (0, 255, 0, 128)),
        lambda: Image.new("LA", (9, 5), (100, 50)),
        lambda: Image.new("L", (5, 9), 200),
        lambda: Image.new("RGB", (8, 8), (0, 0, 255)).convert("P"),
        lambda: Image.new("CMYK", (7, 7), (0, 255, 0, 0)),
        lambda: Image.fromarray(np.full((6, 6), 40000, dtype=np.uint16)),  # I;16
        lambda: Image.new("RGB", (3000, 2000), (10, 20, 30)),
    ],
    ids=["1x1", "RGBA", "LA", "L", "P", "CMYK", "I;16", "huge"],
)
def test_images_of_any_mode_and_size_are_captioned(generator, tmp_path, make):
    image = make()
    path = tmp_path / ("image.jpg" if image.mode == "CMYK" else "image.png")
    image.save(path)
    assert isinstance(generator.image_to_text(path, max_new_tokens=5), str)


def test_missing_and_non_image_files_are_refused(generator, tmp_path):
    with pytest.raises(InvalidInputError, match="no such image file"):
        generator.image_to_text(tmp_path / "missing.png")
    with pytest.raises(InvalidInputError, match="is a folder, not an image file"):
        generator.image_to_text(tmp_path)
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(InvalidInputError, match="not an image"):
        generator.image_to_text(tmp_path / "notes.txt")


# -- retrieval and checkpoints ------------------------------------------------------------
def test_embeddings_are_unit_vectors_and_similarity_is_images_by_texts(generator, photo):
    images = [photo, Image.new("L", (10, 10)), np.zeros((12, 12, 3), dtype=np.uint8)]
    texts = ["a red circle", "a blue square"]
    torch.testing.assert_close(generator.embed_images(images).norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(generator.embed_texts(texts).norm(dim=-1), torch.ones(2))
    similarity = generator.similarity(images, texts)
    assert similarity.shape == (3, 2)
    assert similarity.abs().max() <= 1 + 1e-5


def test_every_generation_config_option_passes_through(generator, photo):
    repeated = generator.image_to_text(photo, max_new_tokens=12, repetition_penalty=0.01)
    assert generator.image_to_text(photo, max_new_tokens=12, no_repeat_ngram_size=1, repetition_penalty=0.01) != repeated
    captions = generator.batch_image_to_text([photo, Image.open(photo)], max_new_tokens=6)
    assert captions == [generator.image_to_text(photo, max_new_tokens=6)] * 2


def test_a_run_folder_resolves_to_best_then_latest(checkpoint, tmp_path):
    shutil.copytree(checkpoint, tmp_path / "run" / "latest")
    assert ImageTextGenerator(tmp_path / "run", device="cpu").checkpoint_dir == tmp_path / "run" / "latest"
    shutil.copytree(checkpoint, tmp_path / "run" / "best")
    assert ImageTextGenerator(tmp_path / "run", device="cpu").checkpoint_dir == tmp_path / "run" / "best"


@pytest.mark.skipif(not COCO_VAL.is_dir(), reason="shared COCO sample not present")
def test_a_real_coco_photo(generator):
    photo = sorted(COCO_VAL.glob("*.jpg"))[0]
    captions = generator.generate_from_image([photo], num_captions_per_image=2, num_beams=2)[0]
    assert len(captions) == 2 and all(isinstance(caption, str) for caption in captions)
    assert generator.similarity([photo], ["a photo"]).shape == (1, 1)


# -- command lines ------------------------------------------------------------------------
def run_script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [sys.executable, str(ROOT / name), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_t2i_cli_writes_the_same_image_as_the_api(generator, checkpoint, tmp_path):
    args = ["a red circle", "--checkpoint", str(checkpoint), "--steps", "3", "--seed", "0", "--candidates", "2"]
    result = run_script("generate_t2i.py", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["generated.png"]
    expected = generator.text_to_image("a red circle", num_inference_steps=3, seed=0, num_candidates=2)
    assert (tmp_path / "generated.png").read_bytes() == png_bytes(expected)


def test_t2i_cli_writes_a_folder_for_several_images(checkpoint, tmp_path):
    prompts = ["a red circle", "a blue square"]
    args = ["--num-samples", "2", "--steps", "2", "--sampler", "dpm", "--output", "out/"]
    args += ["--checkpoint", str(checkpoint)]
    result = run_in_process(script_main("generate_t2i.py"), *prompts, *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = result.stdout.split()
    assert len(written) == 4 and all((tmp_path / path).is_file() for path in written)
    names = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert names == ["a-blue-square_0.png", "a-blue-square_1.png", "a-red-circle_0.png", "a-red-circle_1.png"]


def test_i2t_cli_json(checkpoint, photo, tmp_path):
    args = [str(photo), str(photo), "--checkpoint", str(checkpoint), "--num-captions", "2", "--seed", "0", "--json"]
    result = run_in_process(script_main("generate_i2t.py"), *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout)
    assert [entry["image"] for entry in results] == [str(photo), str(photo)]
    assert all(len(entry["captions"]) == 2 for entry in results)


def test_cli_without_a_checkpoint_says_to_train_first(tmp_path, photo):
    shutil.copy(photo, tmp_path / "photo.png")
    result = run_script("generate_i2t.py", "photo.png", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "python train.py --preset shapes" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_i2t_cli_prints_path_caption_lines(checkpoint, photo, capsys):
    assert script_main("generate_i2t.py")([str(photo), "--checkpoint", str(checkpoint), "--max-new-tokens", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{photo}: ")


@pytest.fixture(scope="module")
def checkpoints(checkpoint, tmp_path_factory) -> dict[str, Path]:
    """The good checkpoint and three that cannot be loaded."""
    folder = tmp_path_factory.mktemp("bad-checkpoints")
    incomplete = folder / "incomplete"
    incomplete.mkdir()
    shutil.copy(checkpoint / "config.json", incomplete)
    other = folder / "other-config"
    shutil.copytree(checkpoint, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "unet_width": 64}))
    return {"good": checkpoint, "missing": folder / "missing", "incomplete": incomplete, "other-config": other}


@pytest.mark.parametrize(
    "script, args, checkpoint_name",
    [
        ("generate_t2i.py", [""], "good"),
        ("generate_t2i.py", ["   "], "good"),
        ("generate_t2i.py", ["a red circle", "--steps", "0"], "good"),
        ("generate_t2i.py", ["a red circle", "--guidance-scale", "-1"], "good"),
        ("generate_t2i.py", ["a red circle", "--sampler", "euler"], "good"),
        ("generate_t2i.py", ["a red circle", "a blue square", "--output", "two.png"], "good"),
        ("generate_t2i.py", ["a red circle"], "missing"),
        ("generate_t2i.py", ["a red circle"], "incomplete"),
        ("generate_t2i.py", ["a red circle"], "other-config"),
        ("generate_i2t.py", ["missing.png"], "good"),
        ("generate_i2t.py", ["notes.txt"], "good"),
        ("generate_i2t.py", ["photo.png", "--top-p", "1.5"], "good"),
        ("generate_i2t.py", ["photo.png", "--temperature", "0"], "good"),
        ("generate_i2t.py", ["photo.png", "--num-beams", "2", "--num-captions", "3"], "good"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(
    checkpoints, photo, tmp_path, monkeypatch, capsys, script, args, checkpoint_name
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not an image")
    shutil.copy(photo, tmp_path / "photo.png")
    with pytest.raises(SystemExit) as exit_info:
        script_main(script)([*args, "--checkpoint", str(checkpoints[checkpoint_name])])
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1 and "error:" in stderr


@pytest.mark.parametrize(
    "script, flags",
    [
        ("generate_t2i.py", ["--checkpoint", "--output", "--num-samples", "--steps", "--guidance-scale",
                             "--sampler", "--eta", "--seed", "--no-diffusion", "--candidates", "--device"]),
        ("generate_i2t.py", ["--checkpoint", "--num-captions", "--temperature", "--top-k", "--top-p",
                             "--repetition-penalty", "--num-beams", "--max-new-tokens", "--seed", "--json",
                             "--device"]),
    ],
)  # fmt: skip
def test_help_describes_every_flag(script, flags, capsys):
    with pytest.raises(SystemExit) as exit_info:
        script_main(script)(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert all(flag in help_text for flag in flags)
    parser = runpy.run_path(str(ROOT / script))["build_parser"]()
    assert all(action.help for action in parser._actions)


@pytest.fixture(scope="module")
def scenes_checkpoint(checkpoint, tmp_path_factory) -> Path:
    """The tiny checkpoint as if the scenes preset had trained it."""
    folder = tmp_path_factory.mktemp("scenes") / "checkpoint"
    shutil.copytree(checkpoint, folder)
    (folder / "trainer_state.json").write_text(json.dumps({"train_config": {"preset": "scenes"}}))
    return folder


def test_a_presets_checkpoint_draws_with_its_sampling_defaults_and_flags_override_them(
    scenes_checkpoint, tmp_path, monkeypatch
):
    scenes = ImageTextGenerator(scenes_checkpoint, device="cpu")
    assert scenes.sampling == SamplingConfig(num_candidates=8)  # the scenes preset's sampling
    best = scenes.text_to_image("a red circle on the left and a blue square on the right", seed=0,
                                num_inference_steps=2)
    single = scenes.text_to_image("a red circle on the left and a blue square on the right", seed=0,
                                  num_inference_steps=2, num_candidates=1)
    assert png_bytes(best) != png_bytes(single)

    monkeypatch.chdir(tmp_path)
    prompt_args = ["a red circle on the left and a blue square on the right", "--checkpoint", str(scenes_checkpoint)]
    assert script_main("generate_t2i.py")([*prompt_args, "--steps", "2", "--seed", "0", "--quiet"]) == 0
    assert (tmp_path / "generated.png").read_bytes() == png_bytes(best)  # the command line draws best of 8 too
    flagged = [*prompt_args, "--steps", "2", "--seed", "0", "--candidates", "1", "--output", "one.png", "--quiet"]
    assert script_main("generate_t2i.py")(flagged) == 0
    assert (tmp_path / "one.png").read_bytes() == png_bytes(single)
    # The fast preview draws one picture whatever the preset says.
    assert script_main("generate_t2i.py")([*prompt_args, "--no-diffusion", "--output", "p.png", "--quiet"]) == 0
