"""The README's commands work as written, in order, after `make demo`; the docs' training
commands are valid; the README stays short and every relative link resolves.

A tiny checkpoint stands in for the demo's (at checkpoints/demo/best, trained "on" a tiny
shapes set), so the walk takes seconds. Every `python generate_t2i.py`, `generate_i2t.py`,
`evaluate.py`, `visualize.py` and `python -m multimodal.…` line of the README's shell blocks
runs as written, in one folder, in the order the README gives them; `train.py` and `torchrun`
lines, the README's and those of docs/*.md, must parse into valid configs (their data and
hours are not here); the Python blocks run as written, their Hub a stand-in on 127.0.0.1.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from string import Template
from typing import Iterator

import pytest

from hub_standin import StandInHub, stand_in_hub
from multimodal.cli import given
from multimodal.config import ServeConfig, model_preset
from multimodal.data import generate_shapes_dataset

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
SCRIPTS = ("generate_t2i.py", "generate_i2t.py", "evaluate.py", "visualize.py")
MAX_README_LINES = 250


def blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(), flags=re.S)


def shell_commands(path: Path = README) -> list[list[str]]:
    """The words of every command in `path`'s bash blocks, as the shell would split them:
    continued lines joined, `NAME=value` assignments substituted into later lines."""
    commands, variables = [], {}
    for block in blocks(path, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(Template(line).safe_substitute(variables), comments=True)
            if len(words) == 1 and re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]):
                name, value = words[0].split("=", 1)
                variables[name] = value
            elif words:
                commands.append(words)
    return commands


def script_of(words: list[str]) -> list[str]:
    """`torchrun … train.py ARGS` as `python train.py ARGS`; any other command as it is."""
    if words[0] == "torchrun":
        return ["python", *words[[w.endswith(".py") for w in words].index(True):]]
    return words


def check_train_flags(words: list[str]) -> None:
    """`python train.py ARGS`: every flag and value valid, the configs built."""
    train = runpy.run_path(str(ROOT / "train.py"))
    if "--help" not in words:
        train["configs_from_args"](train["build_parser"]().parse_args(words[2:]))


@pytest.fixture(scope="module")
def demo_folder(checkpoint, tmp_path_factory) -> Path:
    """A folder as `make demo` leaves it, with the tiny checkpoint in the demo's place."""
    root = tmp_path_factory.mktemp("readme")
    data = generate_shapes_dataset(root / "data" / "shapes", num_train=4, num_val=8, image_size=28, progress=False)
    demo = root / "checkpoints" / "demo"
    shutil.copytree(checkpoint, demo / "best")
    state = {"train_config": {"preset": "shapes", "data_dir": str(data.absolute())}}
    (demo / "best" / "trainer_state.json").write_text(json.dumps(state))
    (demo / "metrics.csv").write_text("epoch,stage,train_loss,val_loss\n1,encoders,2.0,2.1\n2,diffusion,0.5,0.6\n")
    return root


def test_the_readme_has_commands_for_every_script():
    used = {Path(words[1]).name for words in map(script_of, shell_commands()) if words[0] == "python"}
    assert {"train.py", "app.py", *SCRIPTS} <= used


def run_in_process(words: list[str]) -> int:
    """`python SCRIPT ARGS` or `python -m PACKAGE ARGS` through the command's own `main`, in this
    process: the scripts' start-up is tested elsewhere, and a subprocess per line costs seconds."""
    if words[1] == "-m":
        return importlib.import_module(f"{words[2]}.__main__").main(words[3:])
    return runpy.run_path(str(ROOT / words[1]))["main"](words[2:])


def test_every_readme_command_works_in_order(demo_folder, monkeypatch):
    monkeypatch.chdir(demo_folder)
    ran = 0
    for words in shell_commands():
        if words[0] == "make":
            continue  # make demo is what demo_folder stands in for; make test is this
        words = script_of(words)
        assert words[0] == "python", f"README command that is neither make nor python: {words}"
        script = Path(words[1]).name
        if script == "train.py":
            check_train_flags(words)
            continue
        if script == "app.py":  # it serves until stopped: its flags must make a valid config
            app = runpy.run_path(str(ROOT / "app.py"))
            args = app["build_parser"]().parse_args(words[2:])
            ServeConfig(**given(args, ServeConfig))
            continue
        if words[1] == "-m" and not words[2].startswith("multimodal."):
            continue  # python -m bench: measured elsewhere
        assert words[1] == "-m" or script in SCRIPTS, words  # -m: the data tools, the ONNX export and its runner
        assert run_in_process(words) == 0, shlex.join(words)
        ran += 1
    assert ran >= 6


def test_every_readme_python_block_runs(demo_folder):
    # The Hub is the stand-in on 127.0.0.1 (tests/hub_standin.py), with a cache of its own.
    with stand_in_hub() as endpoint:
        hub = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": endpoint, "HF_HUB_CACHE": str(demo_folder / "hub-cache"),
               "HF_TOKEN": "hf_test"}
        # One interpreter runs the blocks in order, each in a namespace of its own (so each needs
        # only its own imports), and stops at the first that fails.
        code = ("import json, sys\n"
                "for block in json.loads(sys.argv[1]):\n    exec(compile(block, 'README.md', 'exec'), {})\n")
        result = subprocess.run([sys.executable, "-c", code, json.dumps(blocks(README, "python"))], cwd=demo_folder,
                                env=ENV | hub, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
    assert "model.safetensors" in StandInHub.repos["your-name/shapes-demo"]


def test_every_training_command_in_the_docs_is_valid(tmp_path, monkeypatch):
    # --autoencoder-frozen reads its run's config.json before training: a run's folder stands in.
    monkeypatch.chdir(tmp_path)
    checked = 0
    for path in DOCS:
        for words in map(script_of, shell_commands(path)):
            if words[0] == "python" and len(words) > 1 and Path(words[1]).name == "train.py":
                if "--autoencoder-frozen" in words:
                    run = tmp_path / words[words.index("--init-from") + 1]
                    run.mkdir(parents=True, exist_ok=True)
                    (run / "config.json").write_text(json.dumps(model_preset("coco").to_dict()))
                    (run / "model.safetensors").write_bytes(b"")
                try:
                    check_train_flags(words)
                except (SystemExit, ValueError) as error:
                    pytest.fail(f"{path.name}: {shlex.join(words)}: {error!r}")
                checked += 1
    assert checked >= 10  # DATA, FINETUNING, GENERALISATION, REAL_PHOTOS and TRAINING have some


def test_the_readme_is_short():
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move details to docs/"


def anchors(path: Path) -> Iterator[str]:
    """The anchors GitHub gives `path`'s headings: lower case, punctuation dropped, spaces as
    hyphens, a repeated one numbered."""
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", without_code(path.read_text()), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        seen[slug] = seen.get(slug, -1) + 1
        yield slug if seen[slug] == 0 else f"{slug}-{seen[slug]}"


def without_code(text: str) -> str:
    return re.sub(r"```.*?```", "", text, flags=re.S)


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda path: path.relative_to(ROOT).as_posix())
def test_every_relative_link_points_at_a_file_and_heading_that_exist(path: Path):
    text = without_code(path.read_text())
    targets = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r"^\[[^\]]+\]: *(\S+)", text, flags=re.M)
    broken = []
    for target in targets:
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in set(anchors(linked)):
            broken.append(f"{target}: no heading #{anchor} in {linked.relative_to(ROOT)}")
    assert not broken, "\n".join(broken)
