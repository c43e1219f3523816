"""The presets: one record each, read by every part that a preset changes."""

from __future__ import annotations

import dataclasses
import json
import runpy
from pathlib import Path

import pytest
import torch
import yaml

from conftest import tiny_config
from multimodal import GenerativeMultimodalModel, presets
from multimodal.config import ModelConfig, SamplingConfig, TrainConfig, model_preset, preset_sampling, train_preset
from multimodal.data import generate_shapes_dataset
from multimodal.model_card import build_model_card

REPO = Path(__file__).resolve().parents[1]


def card_of(preset: str) -> tuple[dict, str]:
    text = build_model_card(tiny_config().to_dict(), {"train_config": {"preset": preset, "data_dir": "data"}})
    _, header, body = text.split("---\n", 2)
    return yaml.safe_load(header), body


@pytest.mark.parametrize("name", presets.names())
def test_every_preset_builds_valid_configs(name):
    preset = presets.get(name)
    assert isinstance(model_preset(name), ModelConfig) and set(preset.model) <= set(ModelConfig.field_names())
    assert train_preset(name).preset == name and set(preset.training) <= set(TrainConfig.field_names())
    assert preset_sampling(name) == SamplingConfig(**preset.sampling)
    assert train_preset(name).resolved_data_dir == Path(preset.data_dir)


@pytest.mark.parametrize("name", presets.names())
def test_every_presets_model_card_names_its_data_set_and_a_prompt_of_its_kind(name):
    preset = presets.get(name)
    header, body = card_of(name)
    assert header["datasets"] == [preset.card.dataset] and header["metrics"] == list(preset.card.metrics)
    assert preset.card.described in body and f'text_to_image("{preset.card.prompt}"' in body
    assert preset.card.limitations in body and "does not record" not in body
    if preset.builtin and preset.builtin.kind == "scenes":  # two objects, so a prompt of two objects
        assert " and " in preset.card.prompt


def test_a_card_without_a_preset_says_so():
    header, body = card_of("a-preset-of-another-version")
    assert header["datasets"] == ["unknown"] and "does not record" in body


def test_unknown_preset_names_list_the_known_ones():
    with pytest.raises(ValueError, match="unknown preset 'shape'; choose from coco, shapes"):
        presets.get("shape")
    with pytest.raises(ValueError, match="preset must be one of coco, shapes, shapes-holdout, scenes"):
        TrainConfig(preset="shape")


def test_the_built_in_set_a_preset_draws_is_found_from_its_params():
    assert presets.of_builtin_set("shapes", {"holdout": False, "image_size": 56}).name == "shapes"
    assert presets.of_builtin_set("shapes", {"holdout": True}).name == "shapes-holdout"
    assert presets.of_builtin_set("scenes", {"image_size": 56}).name == "scenes"
    assert presets.of_builtin_set("shapes", {}) is None  # a set that records nothing matches no preset


@pytest.fixture
def tiny_preset(monkeypatch):
    """A preset added by one record, as a program would add its own: the shapes set with 8
    training pictures, best of 2 by default, and one target of its own."""
    shapes = presets.get("shapes")
    preset = dataclasses.replace(
        shapes, name="tiny-shapes", summary="eight shapes to try things on", data_dir="data/tiny-shapes",
        training=shapes.training | dict(epochs=1, diffusion_epochs=0), sampling=dict(num_candidates=2),
        builtin=dataclasses.replace(shapes.builtin, options={"holdout": False, "num_train": 8}),
        card=dataclasses.replace(shapes.card, dataset="tiny-shapes", prompt="a small green square at the top"),
        targets={"caption/all": 0.0},
    )
    monkeypatch.setitem(presets.PRESETS, preset.name, preset)
    return preset


def test_a_preset_added_in_one_record_reaches_help_card_training_and_evaluation(tiny_preset, tmp_path, capsys):
    train = runpy.run_path(str(REPO / "train.py"))
    help_text = train["build_parser"]().format_help()
    assert "tiny-shapes" in help_text and "eight shapes to try things on" in help_text
    _, train_config = train["configs_from_args"](train["build_parser"]().parse_args(["--preset", "tiny-shapes"]))
    assert (train_config.preset, train_config.epochs, train_config.resolved_data_dir) == (
        "tiny-shapes", 1, Path("data/tiny-shapes"))

    header, body = card_of("tiny-shapes")
    assert header["datasets"] == ["tiny-shapes"] and "a small green square at the top" in body

    data = generate_shapes_dataset(tmp_path / "tiny", num_train=8, num_val=6, image_size=28, progress=False)
    torch.manual_seed(0)
    best = tmp_path / "run" / "best"
    GenerativeMultimodalModel(tiny_config()).save_pretrained(best)
    (best / "trainer_state.json").write_text(json.dumps({"train_config": {"preset": "tiny-shapes", "data_dir": str(data)}}))
    evaluate = runpy.run_path(str(REPO / "evaluate.py"))["main"]
    assert evaluate(["--checkpoint", str(best), "--limit", "2", "--steps", "1"]) == 0
    results = json.loads((best / "evaluation-limit-2.json").read_text())
    assert set(results["targets"]) == {"caption/all"}  # the new preset's own, found from the set's params
    assert results["settings"]["sampling"]["num_candidates"] == 2  # its checkpoints draw as it says
    assert "1 of 1 targets met" in capsys.readouterr().out
