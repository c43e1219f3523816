"""train.py --config: a run's configuration from a file, and a recorded run replayed."""

from __future__ import annotations

import json
import runpy

import pytest

from conftest import REPO, TINY_FLAGS


@pytest.fixture(scope="module")
def train_main():
    return runpy.run_path(str(REPO / "train.py"))["main"]


def recorded(run) -> dict:
    return json.loads((run / "latest" / "trainer_state.json").read_text())


def test_a_recorded_run_replays_from_its_trainer_state(train_main, shapes_dir, tmp_path):
    first = tmp_path / "first"
    flags = ["--preset", "shapes", "--data-dir", str(shapes_dir), "--batch-size", "4", "--max-steps", "1",
             "--no-sample-every-epoch", "--lr", "0.0007", *TINY_FLAGS]
    assert train_main([*flags, "--output-dir", str(first)]) == 0
    state = first / "latest" / "trainer_state.json"
    assert train_main(["--config", str(state), "--output-dir", str(tmp_path / "again")]) == 0
    old, new = recorded(first), recorded(tmp_path / "again")
    assert new["model_config"] == old["model_config"]
    assert new["train_config"] == old["train_config"] | {"output_dir": str(tmp_path / "again")}
    assert new["train_config"]["learning_rate"] == 0.0007
    assert new["history"][-1]["val_loss"] == old["history"][-1]["val_loss"]  # the same run, again


def test_a_yaml_file_sets_fields_and_flags_beside_it_win(train_main, shapes_dir, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"preset: shapes\ndata_dir: {shapes_dir}\nbatch_size: 4\nmax_steps: 1\nepochs: 3\n"
                      "sample_every_epoch: false\nunet_width: 32\nlearning_rate: 0.002\n")
    out = tmp_path / "run"
    assert train_main(["--config", str(config), "--lr", "0.001", "--output-dir", str(out), *TINY_FLAGS]) == 0
    state = recorded(out)
    assert state["train_config"]["learning_rate"] == 0.001 and state["train_config"]["batch_size"] == 4
    assert state["model_config"]["unet_width"] == 32


@pytest.mark.parametrize("text, message", [
    ('{"batch_sise": 4}', "unknown key 'batch_sise' (did you mean batch_size?)"),
    ('[1, 2]', "must hold a mapping of config fields, not list"),
    ('{"batch_size": 4', "cannot be read"),
])
def test_a_bad_config_file_is_one_line_and_exit_2(train_main, text, message, tmp_path, capsys):
    config = tmp_path / "run.json"
    config.write_text(text)
    with pytest.raises(SystemExit) as stopped:
        train_main(["--config", str(config), "--output-dir", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert stopped.value.code == 2 and message in error and "Traceback" not in error
    assert not (tmp_path / "out").exists()
