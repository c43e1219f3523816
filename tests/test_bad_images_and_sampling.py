"""Bad input to generation (issue 37): a tiny picture of extreme aspect, thousands of images
asked at once, non-finite sampling values, seeds torch cannot take, and an output that cannot be
written. Each is refused in one line before anything loads, or handled within bounded memory."""

from __future__ import annotations

import os
import re
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from multimodal.config import SamplingConfig, TrainConfig
from multimodal.config.sampling import IMAGE_BATCH
from multimodal.config.tools import ShapesConfig, VisualizeConfig
from multimodal.data.transforms import image_transform, to_pil
from multimodal.errors import ConfigError, InvalidInputError
from multimodal.generation import ImageTextGenerator
from multimodal.images import MAX_ASPECT, as_rgb, resize_and_crop, save_image

ROOT = Path(__file__).resolve().parents[1]
SIZE = 28  # the tiny checkpoint's image size
SEED_MESSAGE = "must be a whole number from 0 to 9223372036854775807 (2**63 - 1)"


def script(name: str):
    return runpy.run_path(str(ROOT / name))["main"]


@pytest.fixture
def nothing_loads(monkeypatch):
    """A command line that tries to load the model fails the test: its refusal came too late."""

    def load(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was refused")

    monkeypatch.setattr(ImageTextGenerator, "__init__", load)


def refused(main, argv: list[str], capsys) -> str:
    """The one line a command printed when it stopped with exit code 2."""
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    stderr = capsys.readouterr().err
    assert stopped.value.code == 2, stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr, stderr
    return stderr


@pytest.fixture
def small_resizes(monkeypatch):
    """Every resize asks for at most what the bounded resize needs (more fails at once, unallocated)."""
    original = Image.Image.resize
    largest = MAX_ASPECT * SIZE * SIZE

    def resize(self, size, *args, **kwargs):
        assert size[0] * size[1] <= largest, f"a resize to {size} for a {SIZE}-pixel output"
        return original(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", resize)


def resized_whole(image: Image.Image, size: int) -> Image.Image:
    """resize_and_crop as it was before it was bounded: the whole picture resized, then cropped."""
    width, height = image.size
    short, long = sorted((width, height))
    scaled = (size, int(size * long / short))
    scaled = scaled if width <= height else scaled[::-1]
    image = image.resize(scaled, Image.Resampling.BICUBIC)
    left, top = int(round((scaled[0] - size) / 2.0)), int(round((scaled[1] - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


# -- 1. a tiny file of extreme aspect -------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 200_000), (200_000, 1), (3, 90_001)])
def test_an_extreme_aspect_picture_costs_what_its_output_does(shape, small_resizes):
    strip = Image.new("RGB", shape, (0, 200, 0))
    assert resize_and_crop(SIZE)(strip).size == (SIZE, SIZE)
    pixels = image_transform(SIZE)(strip)  # what the data loaders and the API use
    assert pixels.shape == (3, SIZE, SIZE)
    assert torch.allclose(pixels[1], torch.full((SIZE, SIZE), 200 / 127.5 - 1))


def test_the_square_kept_of_a_long_picture_is_its_middle():
    thirds = np.zeros((2, 3000, 3), dtype=np.uint8)
    thirds[:, :1000, 0] = thirds[:, 1000:2000, 1] = thirds[:, 2000:, 2] = 255
    out = np.asarray(resize_and_crop(SIZE)(Image.fromarray(thirds)))
    assert (out[..., 1] == 255).all() and (out[..., [0, 2]] == 0).all()


@pytest.mark.parametrize("shape", [(28, 28), (56, 40), (640, 480), (100, 375), (33, 132), (224, 224), (7, 3)])
@pytest.mark.parametrize("size", [28, 224])
def test_pictures_of_a_usual_aspect_come_out_as_they_always_did(shape, size):
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (*shape[::-1], 3), dtype=np.uint8))
    expected = np.asarray(resized_whole(picture, size))
    assert np.array_equal(np.asarray(resize_and_crop(size)(picture)), expected)


def test_a_467_byte_strip_is_captioned_by_the_command_line_and_the_api(checkpoint, generator, tmp_path, capsys,
                                                                      small_resizes):
    path = tmp_path / "strip.png"
    Image.new("L", (1, 200_000), 255).save(path)
    assert path.stat().st_size < 2_000
    assert as_rgb(path).size == (1, MAX_ASPECT)  # its middle, cut before any copy or conversion
    argv = [str(path), "--checkpoint", str(checkpoint), "--quiet", "--max-new-tokens", "2"]
    assert script("generate_i2t.py")(argv) == 0
    assert capsys.readouterr().out.startswith(f"{path}: ")
    assert len(generator.generate_from_image([str(path), Image.open(path), np.zeros((5, 40_000))],
                                             max_new_tokens=2)) == 3


# -- 2. many images at once ----------------------------------------------------------------
def test_many_images_are_drawn_in_bounded_batches_with_the_pixels_of_one_batch(generator, monkeypatch):
    prompts, count = ["a red circle", "a blue square"], 9  # 18 images: a full batch and a part
    sampling = generator.sampling_config(num_inference_steps=2)
    one_batch = generator.model.generate_image_from_text(
        [p for p in prompts for _ in range(count)], sampling, torch.Generator().manual_seed(0)
    )
    sizes, original = [], generator.model.generate_image_from_text

    def spy(texts, *args, **kwargs):
        sizes.append(len(texts))
        return original(texts, *args, **kwargs)

    monkeypatch.setattr(generator.model, "generate_image_from_text", spy)
    images = generator.generate_from_text(prompts, num_images_per_prompt=count, seed=0, sampling=sampling)
    assert sizes == [IMAGE_BATCH, 2 * count - IMAGE_BATCH]
    drawn = [image for row in images for image in row]
    assert all(np.array_equal(np.asarray(a), np.asarray(to_pil(b))) for a, b in zip(drawn, one_batch))
    assert [len(row) for row in images] == [count, count]


def test_the_help_says_images_are_drawn_in_batches():
    parser = runpy.run_path(str(ROOT / "generate_t2i.py"))["build_parser"]()
    assert f"drawn {IMAGE_BATCH} at a time" in " ".join(parser.format_help().split())


# -- 3. non-finite sampling values ------------------------------------------------------------
@pytest.mark.parametrize("field", ["guidance_scale", "eta", "guidance_rescale"])
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_sampling_values_are_refused_by_the_config(field, value):
    with pytest.raises(ConfigError, match=f"{field} must be a finite number, got {value}"):
        SamplingConfig(**{field: value})
    with pytest.raises(ConfigError, match="must be a finite number"):
        TrainConfig(learning_rate=value)  # every config's floats: the same check


@pytest.mark.parametrize(
    "name, argv, message",
    [
        ("generate_t2i.py", ["a", "--guidance-scale", "inf"], "--guidance-scale must be a finite number, got inf"),
        ("generate_t2i.py", ["a", "--eta", "inf"], "--eta must be a finite number, got inf"),
        ("generate_i2t.py", ["{photo}", "--temperature", "inf"], "--temperature: must be a finite number above 0"),
        ("generate_i2t.py", ["{photo}", "--repetition-penalty", "inf"], "must be a finite number above 0, got inf"),
        ("generate_t2i.py", ["a", "--seed", str(2**70)], f"--seed: {SEED_MESSAGE}, got {2**70}"),
        ("generate_t2i.py", ["a", "--seed", "-1"], f"--seed: {SEED_MESSAGE}, got -1"),
        ("generate_i2t.py", ["{photo}", "--seed", str(2**63), "--temperature", "1"], SEED_MESSAGE),
    ],
)  # fmt: skip
def test_the_command_lines_refuse_them_before_loading(checkpoint, tmp_path, capsys, nothing_loads, name, argv, message):
    photo = tmp_path / "photo.png"
    Image.new("RGB", (8, 8)).save(photo)
    output = ["--output", str(tmp_path / "out.png")] if name == "generate_t2i.py" else []
    argv = [a.format(photo=photo) for a in argv] + ["--checkpoint", str(checkpoint), *output]
    assert message in refused(script(name), argv, capsys)


def test_the_api_refuses_them_in_one_message(generator):
    with pytest.raises(InvalidInputError, match="guidance_scale must be a finite number, got inf"):
        generator.generate_from_text("a red circle", guidance_scale=float("inf"))
    with pytest.raises(InvalidInputError, match="temperature must be a finite number above 0, got inf"):
        generator.generate_from_image(np.zeros((8, 8)), temperature=float("inf"))
    for seed in (2**70, -1):
        with pytest.raises(InvalidInputError, match=re.escape(f"seed {SEED_MESSAGE}")):
            generator.generate_from_text("a red circle", seed=seed, use_diffusion=False)
        with pytest.raises(InvalidInputError, match=re.escape(f"seed {SEED_MESSAGE}")):
            generator.generate_from_image(np.zeros((8, 8)), seed=seed, do_sample=True)


# -- 4. seeds in every config -----------------------------------------------------------------
@pytest.mark.parametrize("config", [TrainConfig, VisualizeConfig, ShapesConfig])
def test_every_seed_field_takes_what_torch_takes(config):
    assert config(seed=2**63 - 1).seed == 2**63 - 1
    for seed in (2**63, 2**70, -1, 1.5, True):
        with pytest.raises(ConfigError, match=re.escape(f"seed {SEED_MESSAGE}")):
            config(seed=seed)


# -- 5. an output that cannot be written ----------------------------------------------------
def test_an_unwritable_output_is_refused_before_loading_naming_the_users_path(checkpoint, tmp_path, capsys,
                                                                            nothing_loads):
    main = script("generate_t2i.py")
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    cases = [
        (["a", "--output", f"{blocker}/pic.png"], f"cannot write {blocker}/pic.png: {blocker} is a file, not a folder"),
        (["a", "b", "--output", f"{blocker}/deeper/"], f"{blocker} is a file, not a folder"),
    ]
    for argv, message in cases:
        stderr = refused(main, [*argv, "--checkpoint", str(checkpoint)], capsys)
        assert message in stderr and ".tmp" not in stderr
    assert blocker.read_text() == "mine"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in a read-only folder")
def test_a_read_only_folder_is_refused_before_loading(checkpoint, tmp_path, capsys, nothing_loads):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        stderr = refused(script("generate_t2i.py"), ["a", "--output", f"{folder}/", "--checkpoint", str(checkpoint)],
                         capsys)
        assert f"may not write in {folder}" in stderr
    finally:
        folder.chmod(0o755)


def test_the_api_checks_where_it_writes_before_drawing(generator, tmp_path, monkeypatch):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    monkeypatch.setattr(generator.model, "generate_image_from_text", lambda *a, **k: pytest.fail("drew first"))
    with pytest.raises(InvalidInputError, match="is a file, not a folder"):
        generator.text_to_image("a red circle", save_path=blocker / "pic.png")
    with pytest.raises(InvalidInputError, match="is a file, not a folder"):
        generator.batch_text_to_image(["a red circle"], save_dir=blocker / "pictures")


def test_a_write_that_fails_names_the_users_file_not_a_temporary_one(tmp_path, monkeypatch):
    def full_disk(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    message = f"cannot write {tmp_path / 'out.png'}: No space left on device"
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        save_image(Image.new("RGB", (4, 4)), tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left behind
