"""What the bad-input campaign (bench/reliability.py) found: sizes that outgrow any machine are
refused before work starts, and no output is written over what the same command reads."""

from __future__ import annotations

import runpy
import shutil

import pytest

from conftest import REPO
from multimodal.config import ModelConfig, TrainConfig
from multimodal.data.convert import convert
from multimodal.errors import ConfigError, DatasetLayoutError, InvalidInputError


@pytest.mark.parametrize("make, message", [
    (lambda: ModelConfig(image_size=7 * 2**20), "image_size must be at most 1792"),
    (lambda: TrainConfig(lora_rank=10**6, init_from="x"), "lora_rank must be from 0 to 512, got 1000000"),
])
def test_sizes_no_machine_holds_are_refused_by_the_config(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


@pytest.mark.parametrize("options, message", [
    (dict(num_beams=5000), "num_beams must be from 1 to 64, got 5000"),
    (dict(num_captions_per_image=10**6), "num_captions_per_image must be from 1 to 64, got 1000000"),
])
def test_caption_counts_no_machine_holds_are_refused(generator, options, message):
    with pytest.raises(InvalidInputError, match=message):
        generator.generate_from_image([generator_image()], **options)


def generator_image():
    from PIL import Image

    return Image.new("RGB", (28, 28), "red")


@pytest.fixture
def evaluate_main():
    return runpy.run_path(str(REPO / "evaluate.py"))["main"]


def test_evaluate_never_writes_over_the_checkpoint_or_the_data(evaluate_main, checkpoint, shapes_dir, tmp_path,
                                                                 capsys):
    local = tmp_path / "ckpt"
    shutil.copytree(checkpoint, local)
    weights = (local / "model.safetensors").read_bytes()
    picture = next((shapes_dir / "val2017").iterdir())
    for flag, path, message in (
        ("--output", local / "model.safetensors", f"is a file of {local}, which this command reads"),
        ("--sheet", picture, "which this command reads"),
    ):
        before = path.read_bytes()
        with pytest.raises(SystemExit) as stopped:
            evaluate_main(["--checkpoint", str(local), "--data-dir", str(shapes_dir), flag, str(path)])
        assert stopped.value.code == 2 and message in capsys.readouterr().err
        assert path.read_bytes() == before
    assert (local / "model.safetensors").read_bytes() == weights


def test_convert_refuses_a_destination_inside_its_source(shapes_dir, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(shapes_dir, source)
    with pytest.raises(DatasetLayoutError, match="lies inside the source"):
        convert(str(source), source / "converted", "imagefolder")
    assert not (source / "converted").exists() and not (source / "converted.partial").exists()
