"""The README's commands work as written, in order, after `make demo`.

A tiny checkpoint stands in for the demo's (at checkpoints/demo/best, trained "on" a tiny
shapes set), so the walk takes seconds. Every `python generate_t2i.py`, `generate_i2t.py`
and `evaluate.py` line of the README's shell blocks runs as written, in one folder, in the
order the README gives them; `train.py` and `torchrun` lines must parse into valid configs
(their data and hours are not here); the Python blocks run as written.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from multimodal.cli import given
from multimodal.config import ServeConfig
from multimodal.data import generate_shapes_dataset

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
SCRIPTS = ("generate_t2i.py", "generate_i2t.py", "evaluate.py")


def readme_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def shell_commands() -> list[list[str]]:
    commands = []
    for block in readme_blocks("bash"):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


@pytest.fixture(scope="module")
def demo_folder(checkpoint, tmp_path_factory) -> Path:
    """A folder as `make demo` leaves it, with the tiny checkpoint in the demo's place."""
    root = tmp_path_factory.mktemp("readme")
    data = generate_shapes_dataset(root / "data" / "shapes", num_train=4, num_val=8, image_size=28, progress=False)
    best = root / "checkpoints" / "demo" / "best"
    shutil.copytree(checkpoint, best)
    state = {"train_config": {"preset": "shapes", "data_dir": str(data.absolute())}}
    (best / "trainer_state.json").write_text(json.dumps(state))
    return root


def test_the_readme_has_commands_for_every_script():
    used = {Path(words[1]).name for words in shell_commands() if words[0] == "python" and len(words) > 1}
    assert {"train.py", "app.py", *SCRIPTS} <= used


def test_every_readme_command_works_in_order(demo_folder):
    ran = 0
    for words in shell_commands():
        if words[0] == "make":
            continue  # make demo is what demo_folder stands in for; make test is this
        if words[0] == "torchrun":
            words = ["python", *words[[w.endswith(".py") for w in words].index(True):]]
        assert words[0] == "python", f"README command that is neither make nor python: {words}"
        script = Path(words[1]).name
        if script == "train.py":
            train = runpy.run_path(str(ROOT / "train.py"))
            if "--help" in words:
                continue
            train["configs_from_args"](train["build_parser"]().parse_args(words[2:]))  # every flag and value valid
            continue
        if script == "app.py":  # it serves until stopped: its flags must make a valid config
            app = runpy.run_path(str(ROOT / "app.py"))
            args = app["build_parser"]().parse_args(words[2:])
            ServeConfig(**given(args, ServeConfig))
            continue
        if words[1] == "-m" and not words[2].startswith("multimodal."):
            continue  # python -m bench: measured elsewhere
        if words[1] == "-m":  # the ONNX export and its runner
            command = [sys.executable, *words[1:]]
        else:
            assert script in SCRIPTS, words
            command = [sys.executable, str(ROOT / script), *words[2:]]
        result = subprocess.run(command, cwd=demo_folder, env=ENV, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{' '.join(words)}\n{result.stderr}"
        ran += 1
    assert ran >= 6


def test_every_readme_python_block_runs(demo_folder):
    for block in readme_blocks("python"):
        result = subprocess.run([sys.executable, "-c", block], cwd=demo_folder, env=ENV, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, f"{block}\n{result.stderr}"
