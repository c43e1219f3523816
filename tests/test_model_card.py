"""Model cards beside the weights, and training curves TensorBoard reads."""

from __future__ import annotations

import json
import struct
from pathlib import Path

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


def test_an_unconditional_checkpoint_card_says_it_draws_from_no_prompt(tmp_path):
    GenerativeMultimodalModel(tiny_config().without_captions()).save_pretrained(tmp_path)
    header, body = card_header(tmp_path)
    assert header["pipeline_tag"] == "unconditional-image-generation" and "text-to-image" not in header["tags"]
    assert "**Unconditional**" in body and "generate_unconditional(4, seed=0)" in body and "image_to_text" not in body


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A two-epoch tiny run that reports to TensorBoard and (offline) to W&B every 2 steps."""
    root = tmp_path_factory.mktemp("run")
    patch = pytest.MonkeyPatch()
    patch.setenv("WANDB_MODE", "offline")
    patch.setenv("WANDB_SILENT", "true")
    data = generate_shapes_dataset(root / "shapes", num_train=24, num_val=8, image_size=28, progress=False)
    config = TrainConfig(preset="shapes", data_dir=str(data), output_dir=str(root / "out"), epochs=2, batch_size=8,
                         num_workers=0, report_to="tensorboard,wandb", log_every=2)
    trainer = Trainer(tiny_config(freeze_bert=True), config)
    trainer.run()
    patch.undo()
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


def wandb_records(run_file: Path) -> list:
    """The records of an offline W&B run file: LevelDB's log format (32 KiB blocks of records with
    a 7-byte header: CRC, length, kind) after W&B's own 7-byte header."""
    from wandb.proto import wandb_internal_pb2

    data, position, block, pending, records = run_file.read_bytes(), 7, 32768, b"", []
    assert data[:4] == b":W&B"
    while position + 7 <= len(data):
        left = block - position % block
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if left < 7 or (length == 0 and kind == 0):  # a block's zero padding
            position += left
            continue
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or a record's last piece
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_wandb_offline_run_holds_the_same_scalars_the_config_and_the_samples(trained):
    output, trainer = trained
    (run_file,) = (output / "wandb").glob("offline-run-*/run-*.wandb")
    records = wandb_records(run_file)
    history = [{item.key or "/".join(item.nested_key): item.value_json for item in r.history.item} for r in records if r.HasField("history")]
    losses = [(int(row["_step"]), float(row["train/loss"])) for row in history if "train/loss" in row]
    assert [step for step, _ in losses] == [2, 4, 6]
    assert {"train/lr", "train/cont", "val/loss", "val/i2t_R@1"} <= {key for row in history for key in row}
    assert [int(row["_step"]) for row in history if "samples/path" in row] == [3, 6]  # each epoch's sheet
    assert len(list(run_file.parent.glob("files/media/images/samples_*.png"))) == 2
    final_val = [float(row["val/loss"]) for row in history if "val/loss" in row][-1]
    assert final_val == pytest.approx(trainer.history[-1]["val_loss"], rel=1e-5)
    (run,) = [r.run for r in records if r.HasField("run")]
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["batch_size"] == 8 and config["report_to"] == "tensorboard,wandb" and run.display_name == "out"
    assert (output / "wandb" / "run_id").read_text().strip() == run.run_id
