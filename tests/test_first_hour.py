"""What a newcomer types in their first hour: output paths, usage errors found before torch
loads, progress, help texts, evaluate.py's results files, and a checkpoint that says what
it knows."""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_in_process, script_main, tiny_config
from multimodal import GenerativeMultimodalModel, ImageTextGenerator, cli
from multimodal.data import generate_shapes_dataset
from multimodal.errors import OutsideTrainingDataWarning

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=300)


def usage_error(script: str, *args: str, cwd: Path) -> tuple[str, bool]:
    """(stderr, whether torch was imported) of a run that must stop with exit code 2."""
    code = (
        "import runpy, sys\n"
        f"sys.argv = [{script!r}, *{list(args)!r}]\n"
        f"try:\n    runpy.run_path({str(ROOT / script)!r}, run_name='__main__')\n"
        "except SystemExit as exit:\n    print(exit.code, 'torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=120)
    code_text, torch_loaded = result.stdout.split()
    assert code_text == "2", result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    return result.stderr, torch_loaded == "True"


@pytest.fixture(scope="module")
def shapes_checkpoint(checkpoint, tmp_path_factory) -> Path:
    """The tiny checkpoint as a trainer writes it after training on the shapes set."""
    root = tmp_path_factory.mktemp("shapes-run")
    data = generate_shapes_dataset(root / "shapes", num_train=4, num_val=6, image_size=28, progress=False)
    target = root / "run" / "best"
    shutil.copytree(checkpoint, target)
    state = {"train_config": {"preset": "shapes", "data_dir": str(data.absolute())}}
    (target / "trainer_state.json").write_text(json.dumps(state))
    return root / "run"


# -- output paths -------------------------------------------------------------------------
def test_a_trailing_slash_makes_a_folder_and_the_extension_picks_the_format(checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main = runpy.run_path(str(ROOT / "generate_t2i.py"))["main"]  # in this process: a fresh one adds nothing here
    common = ["--checkpoint", str(checkpoint), "--no-diffusion", "--quiet"]
    assert main(["a red circle", "--output", "new/", *common]) == 0
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["a-red-circle_0.png"]
    for name, kind in [("pic.jpg", "JPEG"), ("pic.webp", "WEBP"), ("pic.png", "PNG")]:
        assert main(["a red circle", "--output", name, *common]) == 0
        assert Image.open(tmp_path / name).format == kind


def test_nothing_is_overwritten_without_overwrite(checkpoint, tmp_path):
    (tmp_path / "generated.png").write_bytes(b"mine")
    stderr, torch_loaded = usage_error("generate_t2i.py", "a red circle", "--checkpoint", str(checkpoint), cwd=tmp_path)
    assert "generated.png already exists; pass --overwrite" in stderr and not torch_loaded
    assert (tmp_path / "generated.png").read_bytes() == b"mine"
    args = ["a red circle", "--checkpoint", str(checkpoint), "--no-diffusion", "--overwrite", "--quiet"]
    assert run_in_process(script_main("generate_t2i.py"), *args, cwd=tmp_path).returncode == 0
    assert Image.open(tmp_path / "generated.png").format == "PNG"


# -- usage errors, found before torch loads --------------------------------------------------
@pytest.mark.parametrize(
    "script, args, message",
    [
        ("generate_t2i.py", ["a", "--output", "pic.gif"], "cannot write an image as '.gif'"),
        ("generate_t2i.py", ["a", "--output", "newdir"], "a name without an extension"),
        ("generate_t2i.py", ["a", "b", "--output", "two.png"], "give a folder (end it with /)"),
        ("generate_t2i.py", ["a", "--steps", "0"], "--steps must be at least 1, got 0"),
        ("generate_t2i.py", ["a", "--sampler", "dpm", "--eta", "0.5"], "--sampler ddim or leave eta at 0"),
        ("generate_t2i.py", ["a", "--no-diffusion", "--steps", "20"], "--steps set how diffusion samples"),
        ("generate_t2i.py", ["a", "--candidates", "0"], "--candidates must be from 1 to 64, got 0"),
        ("generate_t2i.py", ["a", "--guidance", "7"], "(did you mean --guidance-scale?)"),
        ("generate_t2i.py", ["a", "--checkpoint", "{tmp}/nowhere"], "nowhere does not exist"),
        ("generate_t2i.py", ["a", "--checkpoint", "{checkpoint}/model.safetensors", "--device", "cuda"],
         "no CUDA GPU"),
        ("generate_i2t.py", ["{tmp}/missing.png"], "no such image file"),
        ("generate_i2t.py", ["{tmp}"], "is a folder, not an image file"),
        ("generate_i2t.py", ["{photo}", "--num-beams", "2", "--num-captions", "3"], "--num-beams 3 or more"),
        ("evaluate.py", ["--data-dir", "{tmp}/no-data"], "--data-dir"),
        ("generate_t2i.py", ["a", "--precision", "fp8"], "--precision: invalid choice: 'fp8'"),
        ("generate_i2t.py", ["{photo}", "--precision", "half"], "--precision: invalid choice: 'half'"),
        ("evaluate.py", ["--precision", "int8"], "--precision: invalid choice: 'int8'"),
        ("train.py", ["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    ],
)  # fmt: skip
def test_usage_errors_name_the_flag_before_torch_loads(checkpoint, tmp_path, script, args, message):
    if shutil.which("nvidia-smi") and "cuda" in args:
        pytest.skip("this machine has a GPU")
    photo = tmp_path / "photo.png"
    Image.new("RGB", (8, 8)).save(photo)
    args = [a.format(tmp=tmp_path, checkpoint=checkpoint, photo=photo) for a in args]
    if script != "train.py" and "--checkpoint" not in args:
        args += ["--checkpoint", str(checkpoint)]
    stderr, torch_loaded = usage_error(script, *args, cwd=tmp_path)
    assert message in stderr
    assert not torch_loaded


def test_the_demo_checkpoint_is_found_without_flags(checkpoint, tmp_path):
    shutil.copytree(checkpoint, tmp_path / "checkpoints" / "demo" / "best")
    result = run_in_process(script_main("generate_t2i.py"), "a red circle", "--steps", "2", "--seed", "0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ddim sampling" in result.stderr  # the progress bar
    assert run("generate_t2i.py", "a red circle", "--steps", "2", "--quiet", "--overwrite", cwd=tmp_path).stderr == ""


# -- help --------------------------------------------------------------------------------
@pytest.mark.parametrize("script", ["train.py", "generate_t2i.py", "generate_i2t.py", "evaluate.py"])
def test_every_flag_has_help_and_no_placeholder_default(script):
    parser = runpy.run_path(str(ROOT / script))["build_parser"]()
    help_text = " ".join(parser.format_help().split())
    assert "(default: None)" not in help_text
    for action in parser._actions:
        assert action.help, action.option_strings
        assert not (action.choices and action.help.count("default") > 1), action.option_strings
    if script == "train.py":
        assert "--seed N" in help_text and "(default: 0)" in help_text
        # --freeze-bert depends on the preset; presets that agree share one entry
        assert "(default: coco: false; shapes, shapes-holdout, scenes: true)" in help_text


# -- evaluate.py -------------------------------------------------------------------------
def test_a_quick_look_never_replaces_the_full_result(shapes_checkpoint, tmp_path):
    best = shapes_checkpoint / "best"
    args = ["--checkpoint", str(shapes_checkpoint), "--steps", "2", "--batch-size", "4"]
    evaluate = script_main("evaluate.py")
    result = run_in_process(evaluate, *args, "--limit", "3", cwd=tmp_path)  # from another folder: the data is found
    assert result.returncode == 0, result.stderr
    assert (best / "evaluation-limit-3.json").is_file() and not (best / "evaluation.json").exists()
    assert "a quick look at 3 of 6 images" in result.stdout
    result = run_in_process(evaluate, *args, "--limit", "2", "--output", str(tmp_path / "mine.json"), cwd=tmp_path)
    assert json.loads((tmp_path / "mine.json").read_text())["settings"]["limit"] == 2


# -- a checkpoint says what it knows ------------------------------------------------------
def test_a_shapes_checkpoint_says_once_that_it_only_knows_shapes(shapes_checkpoint):
    generator = ImageTextGenerator(shapes_checkpoint, device="cpu")
    photo = Image.fromarray(np.random.default_rng(0).integers(60, 256, (30, 30, 3), dtype=np.uint8))
    shape = Image.new("RGB", (28, 28))
    shape.paste((220, 40, 40), (4, 4, 12, 12))
    with pytest.warns(OutsideTrainingDataWarning, match="trained on the built-in shapes set only") as caught:
        generator.generate_from_image([shape, photo, photo], max_new_tokens=3)
        generator.image_to_text(photo, max_new_tokens=3)
    assert len([w for w in caught if w.category is OutsideTrainingDataWarning]) == 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ImageTextGenerator(shapes_checkpoint, device="cpu").image_to_text(shape, max_new_tokens=3)
    assert not [w for w in caught if w.category is OutsideTrainingDataWarning]


def test_best_holds_what_using_the_model_needs_and_latest_what_resuming_needs(tmp_path):
    from multimodal.config import TrainConfig
    from multimodal.training import Trainer

    data = generate_shapes_dataset(tmp_path / "shapes", num_train=8, num_val=4, image_size=28, progress=False)
    config = TrainConfig(preset="shapes", data_dir=str(data), output_dir=str(tmp_path / "run"), epochs=1,
                         batch_size=8, num_workers=0, sample_every_epoch=False)
    Trainer(tiny_config(freeze_bert=True), config).run()
    best = {p.name for p in (tmp_path / "run" / "best").iterdir()}
    latest = {p.name for p in (tmp_path / "run" / "latest").iterdir()}
    assert latest - best == {"training_weights.safetensors", "training_state.safetensors"}
    state = json.loads((tmp_path / "run" / "best" / "trainer_state.json").read_text())
    assert state["train_config"]["data_dir"] == str(data.absolute())
    GenerativeMultimodalModel.from_pretrained(tmp_path / "run" / "best")


# -- long work shows progress, and generation holds up on a busy machine -----------------------
def test_sampling_shows_progress_unless_quiet(checkpoint, tmp_path):
    args = ["a red circle", "--checkpoint", str(checkpoint), "--steps", "3", "--output", str(tmp_path / "a.png")]
    main = script_main("generate_t2i.py")  # in this process: a fresh one's --quiet is checked above
    shown = run_in_process(main, *args, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "3/3" in shown.stderr
    quiet = run_in_process(main, *args, "--overwrite", "--quiet", cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_generation_threads_sleep_while_waiting_one_per_two_cores(checkpoint, tmp_path):
    """Spinning OpenMP threads made sampling 40x slower beside one busy process, and on 2-core
    machines one sleeping thread beat two (DESIGN.md)."""
    photo = tmp_path / "photo.png"
    Image.new("RGB", (8, 8)).save(photo)
    argv = ["generate_i2t.py", str(photo), "--checkpoint", str(checkpoint), "--quiet"]
    code = (
        "import os, runpy, sys\n"
        f"sys.argv = {argv!r}\n"
        f"try:\n    runpy.run_path({str(ROOT / 'generate_i2t.py')!r}, run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    import torch  # loaded by the command, after it chose its threads\n"
        "    print(exit.code, os.environ.get('OMP_WAIT_POLICY'), os.environ.get('OMP_NUM_THREADS'), torch.get_num_threads())\n"
    )
    env = {k: v for k, v in ENV.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    threads = str(max(1, len(os.sched_getaffinity(0)) // 2))
    assert result.stdout.split()[-4:] == ["0", "PASSIVE", threads, threads], result.stderr


def test_threads_flag_and_the_users_omp_num_threads_come_before_the_default(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert cli.default_threads() == 4
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert cli.default_threads() == 1
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)  # restored after the test, as the others are
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cli.set_thread_policy(None)
    assert os.environ["OMP_NUM_THREADS"] == "1"
    cli.set_thread_policy(3)
    assert os.environ["OMP_NUM_THREADS"] == "3"
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    cli.set_thread_policy(None)
    assert os.environ["OMP_NUM_THREADS"] == "5"
