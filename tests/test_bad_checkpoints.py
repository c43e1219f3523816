"""Damaged checkpoints, adapters and runs: each is refused in one line that names the file (or
the flag) at fault, before a tensor is loaded and without changing the run folder; and a run's
metrics.csv never lists an epoch that its latest/ does not hold."""

from __future__ import annotations

import hashlib
import json
import runpy
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

import multimodal.training.trainer as trainer_module
from conftest import REPO, tiny_config, tiny_trainer
from multimodal import GenerativeMultimodalModel, ImageTextGenerator, ModelConfig
from multimodal.adapters.__main__ import main as adapters_main
from multimodal.adapters.lora import add_adapters, save_adapter
from multimodal.adapters.targets import LORA_TARGETS
from multimodal.config import TrainConfig
from multimodal.errors import CheckpointError, ConfigError
from multimodal.training import Trainer

train_main = runpy.run_path(str(REPO / "train.py"))["main"]


@pytest.fixture(scope="module")
def runs(shapes_dir, tmp_path_factory) -> dict[str, Path]:
    """A whole-model run and a LoRA run on a base checkpoint (one step each), and an adapter."""
    root = tmp_path_factory.mktemp("runs")
    tiny_trainer(shapes_dir, root / "run", max_steps=1).run()
    torch.manual_seed(0)
    base = GenerativeMultimodalModel(tiny_config(freeze_bert=True))
    base.save_pretrained(root / "base")
    lora = dict(preset="shapes", data_dir=str(shapes_dir), output_dir=str(root / "lora"), batch_size=8, num_workers=0,
                sample_every_epoch=False, init_from=str(root / "base"), lora_rank=2, max_steps=1)
    Trainer(None, TrainConfig(**lora)).run()
    save_adapter(add_adapters(base, 2, 2, LORA_TARGETS.split(",")), root / "adapter", root / "base")
    return {"run": root / "run", "base": root / "base", "lora": root / "lora", "adapter": root / "adapter"}


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file under `folder` and a hash of its bytes: what 'nothing changed' compares."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def refused_in_one_line(main, argv: list[str], capsys) -> str:
    """Run a command line that must refuse: exit code 2 (returned or raised), one line on stderr."""
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    assert code == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    return stderr


def resume_flags(shapes_dir: Path, output: Path, *extra: str) -> list[str]:
    return ["--preset", "shapes", "--data-dir", str(shapes_dir), "--output-dir", str(output), "--batch-size", "8",
            "--num-workers", "0", "--no-sample-every-epoch", "--resume", *extra]


# -- resuming ------------------------------------------------------------------------------
@pytest.mark.parametrize("damaged", ["trainer_state.json", "training_state.safetensors",
                                     "training_weights.safetensors", "model.safetensors"])
def test_resume_from_a_cut_short_file_names_it_and_changes_nothing(damaged, runs, shapes_dir, tmp_path, capsys):
    run = shutil.copytree(runs["run"], tmp_path / "run")
    cut(run / "latest" / damaged)
    before = fingerprint(run)
    stderr = refused_in_one_line(train_main, resume_flags(shapes_dir, run), capsys)
    assert str(run / "latest" / damaged) in stderr and "cut short" in stderr
    assert fingerprint(run) == before


@pytest.mark.parametrize("flags, message", [
    (["--unet-width", "64"], "--unet-width 64 disagrees with the checkpoint's 32; drop the flag or start a new run"),
    (["--caption-heads", "1"], "--caption-heads 1 disagrees with the checkpoint's 2"),
    (["--no-freeze-bert"], "--freeze-bert false disagrees with the checkpoint's true"),
])
def test_resume_with_a_model_flag_the_checkpoint_disagrees_with_names_the_flag(flags, message, runs, shapes_dir,
                                                                               capsys):
    stderr = refused_in_one_line(train_main, resume_flags(shapes_dir, runs["run"], *flags), capsys)
    assert message in stderr


def test_resume_without_the_model_flags_continues_the_checkpoints_model(runs, shapes_dir, tmp_path, capsys):
    """The model a run trained is its latest/'s: resuming needs no model flag repeated (the
    shapes preset's own UNet is 8 times wider than this run's)."""
    run = shutil.copytree(runs["run"], tmp_path / "run")
    assert train_main(resume_flags(shapes_dir, run, "--max-steps", "2")) == 0
    assert "steps 1 → 2" in capsys.readouterr().out
    assert json.loads((run / "latest" / "trainer_state.json").read_text())["model_config"]["unet_width"] == 32


@pytest.mark.parametrize("flags, message", [
    (["--lora-rank", "4"], "--lora-rank 4 disagrees with the checkpoint's 2"),
    ([], "holds LoRA adapters; resume with the flags it was trained with (--init-from {base} --lora-rank 2)"),
])
def test_resuming_a_lora_run_with_other_adapters_names_the_flags(flags, message, runs, shapes_dir, capsys):
    init = ["--init-from", str(runs["base"])] if flags else []
    stderr = refused_in_one_line(train_main, resume_flags(shapes_dir, runs["lora"], *init, *flags), capsys)
    assert message.format(base=runs["base"]) in stderr


def test_resuming_a_lora_run_whose_adapter_is_cut_short_names_the_file(runs, shapes_dir, tmp_path, capsys):
    run = shutil.copytree(runs["lora"], tmp_path / "lora")
    cut(run / "latest" / "adapter_model.safetensors")
    before = fingerprint(run)
    argv = resume_flags(shapes_dir, run, "--init-from", str(runs["base"]), "--lora-rank", "2")
    stderr = refused_in_one_line(train_main, argv, capsys)
    assert f"{run / 'latest' / 'adapter_model.safetensors'} cannot be read" in stderr
    assert fingerprint(run) == before


# -- metrics.csv and curves.png follow latest/ ------------------------------------------------
def test_the_table_and_curves_of_an_epoch_are_written_after_latest_holds_it(shapes_dir, tmp_path, monkeypatch):
    seen = []
    draw = trainer_module.training_curves

    def curves(history: pd.DataFrame, path: Path) -> Path:
        latest = json.loads((tmp_path / "latest" / "trainer_state.json").read_text())
        seen.append((len(pd.read_csv(tmp_path / "metrics.csv")), len(history), len(latest["history"])))
        return draw(history, path)

    monkeypatch.setattr(trainer_module, "training_curves", curves)
    tiny_trainer(shapes_dir, tmp_path, epochs=2, batch_size=24).run()  # one step an epoch
    assert seen == [(1, 1, 1), (2, 2, 2)]


def test_resuming_trims_the_table_and_curves_to_what_latest_holds(runs, shapes_dir, tmp_path):
    """As after a kill -9 between writing metrics.csv and latest/ (by a run of an earlier version)."""
    run = shutil.copytree(runs["run"], tmp_path / "run")
    table = pd.read_csv(run / "metrics.csv")
    pd.concat([table, table.assign(epoch=2, step=2)]).to_csv(run / "metrics.csv", index=False)
    (run / "curves.png").write_bytes(b"stale")
    tiny_trainer(shapes_dir, run, resume=True, max_steps=1).run()
    assert pd.read_csv(run / "metrics.csv")["epoch"].tolist() == [1]
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"


# -- loading a checkpoint or an adapter --------------------------------------------------------
@pytest.mark.parametrize("field, value, message", [
    ("caption_heads", 0, "caption_heads must be at least 1, got 0"),
    ("caption_heads", -1, "caption_heads must be at least 1, got -1"),
    ("unet_heads", 0, "unet_heads must be at least 1, got 0"),
    ("unet_heads", 3, "unet_heads must divide unet_width (32) into equal heads, got 3"),
    ("caption_layers", -1, "caption_layers must be at least 1, got -1"),
    ("unet_blocks", -1, "unet_blocks cannot be negative, got -1"),
    ("encoder_width", 0, "encoder_width must be at least 1, got 0"),
    ("caption_dropout", 1.5, "caption_dropout must be in [0, 1), got 1.5"),
    ("unet_width", "32", "unet_width must be a whole number, got '32'"),
    ("bert_config", {"num_attention_heads": 0}, "num_attention_heads must be a whole number of at least 1"),
    ("bert_config", {"num_attention_heads": 3}, "num_attention_heads (3) must divide hidden_size (32)"),
])
def test_a_config_json_of_impossible_sizes_is_refused_at_load_naming_the_file_and_field(field, value, message,
                                                                                       checkpoint, tmp_path):
    broken = shutil.copytree(checkpoint, tmp_path / "broken")
    config = json.loads((broken / "config.json").read_text())
    config[field] = {**config[field], **value} if field == "bert_config" else value
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="config.json is not a valid model config") as error:
        GenerativeMultimodalModel.from_pretrained(broken)
    assert message in str(error.value)
    if field != "bert_config" and not isinstance(value, str):  # the configs check themselves, whoever builds one
        with pytest.raises(ConfigError, match=field):
            ModelConfig(**{field: value})


@pytest.mark.parametrize("damaged", ["tokenizer.json", "tokenizer_config.json"])
def test_a_damaged_tokenizer_is_blamed_on_its_own_file(damaged, checkpoint, tmp_path):
    broken = shutil.copytree(checkpoint, tmp_path / "broken")
    cut(broken / damaged)
    with pytest.raises(CheckpointError) as error:
        ImageTextGenerator(broken, device="cpu")
    assert f"{broken / damaged} is damaged or cut short" in str(error.value)
    assert str(broken / "config.json") not in str(error.value)


def test_train_init_from_a_damaged_checkpoint_is_one_line(checkpoint, shapes_dir, tmp_path, capsys):
    broken = shutil.copytree(checkpoint, tmp_path / "broken")
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "caption_heads": 0}))
    argv = ["--preset", "shapes", "--data-dir", str(shapes_dir), "--output-dir", str(tmp_path / "out"),
            "--init-from", str(broken), "--num-workers", "0"]
    assert "caption_heads must be at least 1" in refused_in_one_line(train_main, argv, capsys)


@pytest.mark.parametrize("damage, message", [
    ("cut weights", "adapter_model.safetensors cannot be read"),
    ("empty weights", "adapter_model.safetensors cannot be read"),
    ("rank -1", "adapter_config.json does not describe adapters of"),
    ("unknown target", "adapter_config.json does not describe adapters of {base}: 'nope' is no module of the model"),
    ("a file", "is a file; give the folder that holds adapter_config.json"),
])
def test_a_damaged_adapter_is_one_line_naming_its_file(damage, message, runs, tmp_path, capsys):
    adapter = shutil.copytree(runs["adapter"], tmp_path / "adapter")
    config = json.loads((adapter / "adapter_config.json").read_text())
    if damage == "cut weights":
        cut(adapter / "adapter_model.safetensors")
    elif damage == "empty weights":
        (adapter / "adapter_model.safetensors").write_bytes(b"")
    elif damage == "rank -1":
        (adapter / "adapter_config.json").write_text(json.dumps({**config, "r": -1}))
    elif damage == "unknown target":
        (adapter / "adapter_config.json").write_text(json.dumps({**config, "target_modules": ["nope"]}))
    else:
        shutil.rmtree(adapter)
        adapter.write_text("not a folder")
    message = message.format(base=runs["base"])
    with pytest.raises(CheckpointError) as error:
        ImageTextGenerator(runs["base"], device="cpu", adapter=adapter)
    assert message in str(error.value)
    stderr = refused_in_one_line(adapters_main, ["merge", str(adapter), str(tmp_path / "merged")], capsys)
    assert message in stderr and not (tmp_path / "merged").exists()


@pytest.mark.parametrize("given, message", [
    ("checkpoint/config.json", "checkpoint/config.json is a file; give the folder that holds config.json"),
    ("lora", "lora/best is a LoRA adapter, not a checkpoint: load it with --adapter"),
])
def test_a_file_or_an_adapter_given_as_the_checkpoint_says_what_to_give(given, message, runs, checkpoint):
    path = checkpoint.parent / given if given.startswith("checkpoint") else runs["lora"]
    with pytest.raises(CheckpointError) as error:
        ImageTextGenerator(path, device="cpu")
    assert message in str(error.value)
    if given.startswith("checkpoint"):
        with pytest.raises(CheckpointError, match="is a file; give the folder"):
            GenerativeMultimodalModel.from_pretrained(path)
