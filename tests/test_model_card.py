"""Model cards beside the weights, and training curves TensorBoard reads."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from conftest import tiny_config
from multimodal import GenerativeMultimodalModel
from multimodal.config import TrainConfig
from multimodal.data import generate_shapes_dataset
from multimodal.model_card import write_model_card
from multimodal.training import Trainer


def card_header(folder) -> tuple[dict, str]:
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    _, header, body = text.split("---\n", 2)
    return yaml.safe_load(header), body


def test_save_pretrained_writes_a_hugging_face_model_card(tmp_path):
    GenerativeMultimodalModel(tiny_config()).save_pretrained(tmp_path)
    header, body = card_header(tmp_path)
    assert header["library_name"] == "multimodal"
    assert {"text-to-image", "image-to-text"} <= set(header["tags"]) and header["datasets"] and header["metrics"]
    assert "ImageTextGenerator(" in body and "## Limitations" in body
    assert "how it was trained is not recorded" in body


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A two-epoch tiny run that reports to TensorBoard every 2 steps."""
    root = tmp_path_factory.mktemp("run")
    data = generate_shapes_dataset(root / "shapes", num_train=24, num_val=8, image_size=28, progress=False)
    config = TrainConfig(preset="shapes", data_dir=str(data), output_dir=str(root / "out"), epochs=2, batch_size=8,
                         num_workers=0, report_to="tensorboard", log_every=2)
    trainer = Trainer(tiny_config(freeze_bert=True), config)
    trainer.run()
    return root / "out", trainer


def test_a_trained_checkpoint_card_says_how_it_was_trained(trained):
    output, trainer = trained
    for name in ("best", "latest"):
        header, body = card_header(output / name)
        assert header["datasets"] == ["shapes"] and "recall" in header["metrics"]
        assert f"{trainer.step} optimiser steps, 2 epochs" in body and "Preset `shapes`" in body
        assert "only the shapes set" in body


def test_evaluation_adds_its_table_to_the_card(trained, tmp_path):
    output, _ = trained
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    for path in (output / "best").iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    results = {"data_dir": "/data/shapes", "settings": {"limit": None, "device": "cpu"},
               "metrics": {"images": 8, "caption/all": 0.25, "seconds/captions": 1.5},
               "targets": {"caption/all": {"goal": 0.95, "met": False}}}
    write_model_card(folder, results)
    _, body = card_header(folder)
    assert "## Evaluation" in body and "the whole validation split of `/data/shapes`" in body
    assert "| caption/all | 0.2500 | ≥ 0.95 (missed) |" in body and "| images | 8 |  |" in body
    assert "seconds/" not in body  # timings depend on the machine, not the model
    assert not list(folder.glob(".*.tmp"))
    sampling = {"sampler": "ddim", "num_inference_steps": 50, "guidance_scale": 3.0, "num_candidates": 8}
    write_model_card(folder, results | {"settings": {"limit": None, "device": "cpu", "sampling": sampling}})
    assert "Text→image: ddim, 50 steps, guidance 3, the best of 8 by the caption decoder." in card_header(folder)[1]


def test_tensorboard_reads_the_runs_losses_metrics_and_samples(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    output, trainer = trained
    events = EventAccumulator(str(output / "tensorboard"), size_guidance={"images": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/cont", "train/cap", "train/lr", "val/loss", "val/i2t_R@1"} <= scalars
    losses = events.Scalars("train/loss")
    assert [event.step for event in losses] == [2, 4, 6]  # every 2 of the 6 steps
    assert all(torch.isfinite(torch.tensor(event.value)) for event in losses)
    assert [event.step for event in events.Scalars("val/loss")] == [3, 6]  # each epoch
    sheets = events.Images("samples")
    assert [sheet.step for sheet in sheets] == [3, 6] and sheets[0].width > 0 and sheets[0].height > 0
    metrics = json.loads((output / "latest" / "trainer_state.json").read_text())["history"]
    assert events.Scalars("val/loss")[-1].value == pytest.approx(metrics[-1]["val_loss"], rel=1e-5)
