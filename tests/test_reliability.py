"""Reliability: nothing is lost when a run stops, bad input gets one clear line, nothing is
unpickled or imported from a checkpoint, and the generator takes any prompt and any image.

What already lives elsewhere (not repeated here):
  exact resume ................ test_training.py::test_resume_continues_the_step_count_schedule_and_losses
  train.py bad flags / paths .. test_training.py::test_bad_input_gets_one_line_and_exit_code_2
                                (missing data folder, batch size 0, lr < 0, image size, output a file,
                                resume without a checkpoint, unknown flag, an existing run)
  corrupt images in a dataset . test_data.py::test_loader_replaces_corrupt_file_with_neighbour
  non-COCO JSON (loader) ...... test_data.py::test_wrong_json_and_missing_annotation_file_raise_layout_error
  t2i / i2t bad options ....... test_generation.py::test_bad_input_is_one_line_and_exit_code_2 (empty and
                                blank prompt, steps 0, guidance < 0, unknown sampler, top_p 1.5,
                                temperature 0, missing / non-image file; missing, incomplete and
                                other-config checkpoints) and ::test_bad_sampling_options_are_refused
  long prompt (API) ........... test_generation.py::test_a_too_long_prompt_is_truncated_with_a_warning
  image modes and sizes (API) . test_generation.py::test_images_of_any_mode_and_size_are_captioned
  extra / missing tensors (API) test_models.py::test_checkpoint_with_a_missing_or_extra_tensor_is_refused
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load_file, save_file

import multimodal.training.checkpoint as checkpoint_module
from conftest import REPO, TINY_FLAGS, run_train, script_main, tiny_config, tiny_trainer, train_in_process
from multimodal import GenerativeMultimodalModel, ImageTextGenerator
from multimodal.data import load_rgb
from multimodal.errors import InvalidInputError, PromptTruncatedWarning
from multimodal.training import TrainingError
from multimodal.training.checkpoint import (
    is_resumable,
    keep_step_copies,
    load_checkpoint,
    recover_checkpoint,
    save_checkpoint,
)

PACKAGE = REPO / "multimodal"
SCRIPTS = [REPO / name for name in ("train.py", "generate_t2i.py", "generate_i2t.py", "evaluate.py", "app.py")]


def exits_with_one_line(main, argv: list[str], capsys) -> str:
    """Run a command line that must refuse its input: exit code 2, one line on stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    return stderr


# == Nothing lost =========================================================================
def _save(directory: Path, model, step: int) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    save_checkpoint(directory, model, model, optimizer, {"step": step})


def _step_of(directory: Path) -> int:
    return json.loads((directory / "trainer_state.json").read_text())["step"]


def test_a_crash_while_saving_leaves_the_previous_latest_intact(tiny_model, tmp_path, monkeypatch):
    latest = tmp_path / "latest"
    _save(latest, tiny_model, step=1)
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    with torch.no_grad():
        for p in tiny_model.parameters():
            p.add_(1.0)

    def disk_full(*args, **kwargs):
        assert (tmp_path / ".latest.tmp" / "model.safetensors").is_file()  # the crash is midway
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_module, "save_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        _save(latest, tiny_model, step=2)

    assert _step_of(latest) == 1 and is_resumable(latest)
    loaded = GenerativeMultimodalModel.from_pretrained(latest)
    for name, tensor in loaded.state_dict().items():
        torch.testing.assert_close(tensor, before[name], rtol=0, atol=0, msg=name)
    model = GenerativeMultimodalModel(tiny_config())
    assert load_checkpoint(latest, model, model, torch.optim.AdamW(model.parameters()))["step"] == 1

    monkeypatch.undo()  # the next save succeeds and clears the half-written folder
    _save(latest, tiny_model, step=2)
    assert _step_of(latest) == 2 and not (tmp_path / ".latest.tmp").exists()


def test_a_crash_between_the_two_renames_is_recovered(tiny_model, tmp_path):
    """kill -9 after the old folder moved aside but before the new one took its place."""
    _save(tmp_path / ".latest.old", tiny_model, step=4)
    _save(tmp_path / ".latest.tmp", tiny_model, step=6)
    assert not recover_checkpoint(tmp_path / "best")  # nothing there: nothing to do
    assert recover_checkpoint(tmp_path / "latest")
    assert _step_of(tmp_path / "latest") == 6  # the new one was complete
    assert not recover_checkpoint(tmp_path / "latest")  # an existing folder is left alone

    shutil.rmtree(tmp_path / "latest")
    _save(tmp_path / ".latest.tmp", tiny_model, step=8)
    (tmp_path / ".latest.tmp" / "trainer_state.json").unlink()  # cut off while writing
    assert recover_checkpoint(tmp_path / "latest")
    assert _step_of(tmp_path / "latest") == 4  # the previous one, intact


def test_keep_last_keeps_step_copies_of_the_last_k_saves(tiny_model, tmp_path):
    latest = tmp_path / "latest"
    for step in (2, 4, 6, 8):
        _save(latest, tiny_model, step)
        assert keep_step_copies(latest, step, keep_last=0) is None
        copy = keep_step_copies(latest, step, keep_last=2)
        assert copy == tmp_path / f"step_{step:07d}"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "latest", "step_0000006", "step_0000008",
    ]
    assert not list(tmp_path.glob(".*"))  # no temporary folder left behind
    assert _step_of(tmp_path / "step_0000006") == 6 and is_resumable(tmp_path / "step_0000006")
    GenerativeMultimodalModel.from_pretrained(tmp_path / "step_0000006")
    _save(latest, tiny_model, 10)  # a later save of latest/ does not touch the copies
    assert _step_of(tmp_path / "step_0000008") == 8


def test_trainer_keeps_the_last_k_saves_as_step_folders(shapes_dir, tmp_path):
    tiny_trainer(shapes_dir, tmp_path, epochs=1, save_every=1, keep_last=2).run()
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_0000002", "step_0000003"]
    assert _step_of(tmp_path / "step_0000003") == _step_of(tmp_path / "latest") == 3


def _start_train(*args: str, log: Path) -> subprocess.Popen:
    # Output into files: a pipe nobody reads would fill up and block the run. A session of
    # its own, so a signal can go to the whole process group, as Ctrl-C in a terminal does.
    return subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=log.parent,
        stdout=open(log.with_suffix(".out"), "w"),
        stderr=open(log.with_suffix(".err"), "w"),
        start_new_session=True,
    )


def _wait_for(process: subprocess.Popen, ready, log: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            pytest.fail(f"train.py ended early ({process.returncode}): {log.with_suffix('.err').read_text()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("train.py did not get going in time")
        time.sleep(0.05)


def _long_run_flags(data: Path, output: Path, *extra: str) -> list[str]:
    return ["--preset", "shapes", "--data-dir", str(data), "--output-dir", str(output), "--batch-size", "4",
            "--epochs", "1000", "--no-sample-every-epoch", *TINY_FLAGS, *extra]


@pytest.mark.parametrize(
    "signal_name, workers, group",
    [("SIGTERM", "0", False), ("SIGINT", "1", True)],
    ids=["SIGTERM to the trainer", "Ctrl-C: SIGINT to the trainer and its data worker"],
)
def test_a_signal_finishes_the_step_saves_latest_and_exits_0(
    shapes_dir, tmp_path, signal_name, workers, group
):
    data = shutil.copytree(shapes_dir, tmp_path / "data")
    corrupt = sorted((data / "train2017").iterdir())[5]
    corrupt.write_bytes(b"not a picture")  # a corrupt image on the way is skipped, not fatal
    output = tmp_path / "run"
    log = tmp_path / "train"
    process = _start_train(*_long_run_flags(data, output, "--save-every", "1000", "--num-workers", workers), log=log)
    # Stop it once it trains, and after it met the corrupt image (within its first epoch).
    _wait_for(process, lambda: {"epoch 1/", "unreadable image"} <= set(re.findall(
        r"epoch 1/|unreadable image", log.with_suffix(".err").read_text())), log)
    if group:
        os.killpg(process.pid, getattr(signal, signal_name))
    else:
        process.send_signal(getattr(signal, signal_name))
    assert process.wait(timeout=120) == 0
    stdout, stderr = log.with_suffix(".out").read_text(), log.with_suffix(".err").read_text()
    assert "Traceback" not in stderr
    match = re.search(rf"{signal_name}: stopped at step (\d+); saved (\S+) \(resume with --resume\)", stdout)
    assert match, stdout
    assert Path(match.group(2)) == output / "latest"
    assert is_resumable(output / "latest") and _step_of(output / "latest") == int(match.group(1)) > 0
    GenerativeMultimodalModel.from_pretrained(output / "latest")
    assert f"unreadable image {corrupt}" in stderr


def test_kill_9_loses_at_most_the_steps_since_the_last_save(shapes_dir, tmp_path):
    output = tmp_path / "run"
    log = tmp_path / "train"
    process = _start_train(*_long_run_flags(shapes_dir, output, "--save-every", "2"), log=log)
    _wait_for(process, lambda: (output / "latest" / "trainer_state.json").is_file(), log)
    process.kill()
    process.wait(timeout=60)
    recover_checkpoint(output / "latest")  # as train.py does, should the kill have hit a rename
    saved = _step_of(output / "latest")
    assert saved > 0 and saved % 2 == 0

    resumed = run_train(*_long_run_flags(shapes_dir, output, "--save-every", "2", "--max-steps", str(saved + 2),
                                         "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert "Traceback" not in resumed.stderr
    assert f"steps {saved} → {saved + 2}" in resumed.stdout
    assert _step_of(output / "latest") == saved + 2


def test_nonfinite_losses_are_skipped_counted_and_too_many_stop_the_run(shapes_dir, tmp_path):
    trainer = tiny_trainer(shapes_dir, tmp_path, epochs=3, max_nonfinite_steps=3, save_every=1000)
    forward, calls = trainer.model.forward, []

    def sometimes_nan(*args, **kwargs):
        out = dict(forward(*args, **kwargs))
        calls.append(len(calls) + 1)
        if calls[-1] == 2 or calls[-1] >= 4:  # step 2 alone, then every step from step 4 on
            out["loss"] = out["loss"] * float("nan")
        return out

    trainer.model.forward = sometimes_nan
    with pytest.raises(TrainingError) as error:
        trainer.run()
    assert str(error.value) == (
        f"3 non-finite losses in a row at step 5; stopping (last good checkpoint: {tmp_path / 'latest'}). "
        "Try a lower --lr."
    )
    assert trainer.nonfinite_total == 4
    first = next(iter(trainer.optimizer.state.values()))
    assert int(first["step"]) == 2  # only the two finite steps moved the weights
    # latest/ is the one written at the end of epoch 1 (step 3), with the one skip before it.
    state = json.loads((tmp_path / "latest" / "trainer_state.json").read_text())
    assert state["step"] == 3 and state["nonfinite_total"] == 1
    GenerativeMultimodalModel.from_pretrained(tmp_path / "latest")


# == Bad input: one clear line and exit code 2 ============================================
@pytest.mark.parametrize("problem", ["empty data folder", "not COCO captions"])
def test_train_py_refuses_an_empty_data_folder_and_a_json_that_is_not_coco(problem, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    if problem == "not COCO captions":
        (data / "train2017").mkdir()
        (data / "annotations").mkdir()
        (data / "annotations" / "captions_train2017.json").write_text(json.dumps({"categories": [{"id": 1}]}))
    result = train_in_process("--data-dir", str(data), "--output-dir", str(tmp_path / "run"), *TINY_FLAGS, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    expected = "is empty" if problem == "empty data folder" else "is not a COCO captions file"
    assert expected in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--save-every", "0"], "--save-every must be at least 1"),
        (["--keep-last", "-1"], "--keep-last cannot be negative"),
        (["--max-nonfinite-steps", "0"], "--max-nonfinite-steps must be at least 1"),
        (["--ema-decay", "1.5"], "--ema-decay must be in [0, 1)"),
        (["--output-dir", "a_file/run"], "a_file is a file"),
        (["--preset", "shapes", "--data-dir", "a_file"], "is a file, not a folder"),
    ],
)
def test_train_py_refuses_out_of_range_flags(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("not a folder")
    main = script_main("train.py")
    if "--data-dir" in args:  # found by the trainer, not the parser: a return code, not SystemExit
        assert main([*TINY_FLAGS, "--output-dir", "run", *args]) == 2
        stderr = capsys.readouterr().err
        assert len(stderr.strip().splitlines()) == 1, stderr
    else:
        stderr = exits_with_one_line(main, [*TINY_FLAGS, *args], capsys)
    assert message in stderr


def test_t2i_cli_truncates_a_long_prompt_with_one_warning_line(checkpoint, tmp_path, capsys):
    argv = ["word " * 50, "--no-diffusion", "--checkpoint", str(checkpoint), "--output", str(tmp_path / "a.png")]
    assert script_main("generate_t2i.py")(argv) == 0
    stderr = capsys.readouterr().err
    assert len(stderr.strip().splitlines()) == 1 and "warning:" in stderr and "only the first 16" in stderr
    assert Image.open(tmp_path / "a.png").size == (28, 28)


def test_t2i_cli_takes_any_unicode_prompt(checkpoint, tmp_path, capsys):
    prompts = ["一只红色的圆", "ein rotes Quadrat 🟥 — «ÿ»", "\u200b\u0301 مربع أزرق", "\x00\t?"]
    argv = [*prompts, "--steps", "2", "--seed", "0", "--checkpoint", str(checkpoint), "--output", str(tmp_path), "--quiet"]
    assert script_main("generate_t2i.py")(argv) == 0
    out, err = capsys.readouterr()
    assert err == ""
    written = [Path(line) for line in out.splitlines()]
    assert len(written) == 4 and all(path.is_file() for path in written)
    assert written[0].name == "一只红色的圆_0.png"


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory) -> list[Path]:
    """Every mode, 1×1, and a 6000×4000 photo."""
    folder = tmp_path_factory.mktemp("odd")
    noise = np.random.default_rng(0).integers(0, 256, (20, 30, 4), dtype=np.uint8)
    rgba = Image.fromarray(noise)
    images = {
        "L.png": rgba.convert("L"),
        "LA.png": rgba.convert("LA"),
        "P.png": rgba.convert("RGB").convert("P"),
        "CMYK.jpg": rgba.convert("CMYK"),
        "RGBA.png": rgba,
        "I16.png": Image.fromarray((noise[:, :, 0].astype(np.uint16) * 257)),
        "1x1.png": Image.new("RGB", (1, 1), (255, 0, 0)),
        "huge.jpg": Image.new("RGB", (6000, 4000), (200, 30, 30)),
    }
    for name, image in images.items():
        image.save(folder / name)
    assert Image.open(folder / "I16.png").mode.startswith("I")
    return [folder / name for name in images]


def test_i2t_cli_captions_odd_modes_a_single_pixel_and_a_huge_photo(checkpoint, odd_images, capsys):
    argv = [*map(str, odd_images), "--max-new-tokens", "3", "--checkpoint", str(checkpoint)]
    assert script_main("generate_i2t.py")(argv) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert [line.split(": ")[0] for line in out.splitlines()] == list(map(str, odd_images))
    # The huge JPEG is decoded at a reduced scale (memory and time), still above the model's size.
    huge = load_rgb(odd_images[-1], min_size=28)
    assert 56 <= min(huge.size) and huge.size[0] <= 6000 // 8


@pytest.mark.parametrize("problem", ["truncated JPEG", "decompression bomb"])
def test_i2t_cli_refuses_a_truncated_jpeg_and_a_decompression_bomb(problem, checkpoint, tmp_path, monkeypatch,
                                                                    capsys):
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    if problem == "truncated JPEG":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:  # as if it were far larger than PIL's limit
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 // 3)
    stderr = exits_with_one_line(script_main("generate_i2t.py"), [str(path), "--checkpoint", str(checkpoint)], capsys)
    assert f"{path} is not an image that can be read" in stderr
    assert ("truncated" if problem == "truncated JPEG" else "decompression bomb") in stderr


@pytest.mark.parametrize(
    "script, damage, message",
    [
        ("generate_i2t.py", "missing tensor", "missing tensors: image_decoder.layers.0.weight"),
        ("generate_t2i.py", "extra tensor", "unexpected tensors: surprise.weight"),
        ("generate_t2i.py", "truncated weights", "model.safetensors cannot be read"),
        ("generate_i2t.py", "config not JSON", "config.json is not a valid model config"),
        ("generate_t2i.py", "config a list", "config.json is not a valid model config"),
        ("generate_t2i.py", "bert_config null", "bert_config is missing"),
        ("generate_i2t.py", "impossible bert_config", "cannot be built"),
        ("generate_i2t.py", "no tokenizer vocabulary", "tokenizer.json (or vocab.txt) is missing"),
    ],
)
def test_cli_says_what_is_wrong_with_a_checkpoint(script, damage, message, checkpoint, tmp_path, capsys):
    broken = shutil.copytree(checkpoint, tmp_path / "broken")
    weights_file, config_file = broken / "model.safetensors", broken / "config.json"
    weights, config = load_file(weights_file), json.loads(config_file.read_text())
    if damage == "missing tensor":
        del weights["image_decoder.layers.0.weight"]
        save_file(weights, weights_file)
    elif damage == "extra tensor":
        save_file({**weights, "surprise.weight": torch.zeros(3)}, weights_file)
    elif damage == "truncated weights":
        weights_file.write_bytes(weights_file.read_bytes()[:1000])
    elif damage == "config not JSON":
        config_file.write_text("{not json")
    elif damage == "config a list":
        config_file.write_text("[1]")
    elif damage == "bert_config null":
        config_file.write_text(json.dumps({**config, "bert_config": None}))
    elif damage == "impossible bert_config":
        config_file.write_text(json.dumps({**config, "bert_config": {**config["bert_config"], "hidden_size": -1}}))
    else:
        (broken / "tokenizer.json").unlink()
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.png")
    first = str(tmp_path / "photo.png") if script == "generate_i2t.py" else "a red circle"
    stderr = exits_with_one_line(script_main(script), [first, "--checkpoint", str(broken)], capsys)
    assert message in stderr


# == Safety: nothing unpickled, no remote code, no paths imported =========================
def _refuse(*args, **kwargs):
    raise AssertionError("something was unpickled")


def test_loading_and_resuming_never_unpickle(shapes_dir, tmp_path, monkeypatch):
    tiny_trainer(shapes_dir, tmp_path).save()
    for module, name in ((torch, "load"), (torch.serialization, "load"), (pickle, "load"), (pickle, "loads")):
        monkeypatch.setattr(module, name, _refuse)
    resumed = tiny_trainer(shapes_dir, tmp_path, resume=True)
    assert resumed.step == 0 and is_resumable(tmp_path / "latest")
    GenerativeMultimodalModel.from_pretrained(tmp_path / "latest")
    ImageTextGenerator(tmp_path, device="cpu")


def test_the_package_never_trusts_remote_code_nor_runs_code_it_is_given():
    sources = {path: path.read_text() for path in [*PACKAGE.rglob("*.py"), *SCRIPTS]}
    forbidden = {
        "trust_remote_code": r"trust_remote_code",
        "unpickling": r"torch\.load\((?![^)]*weights_only=True)|\bpickle\b|\bdill\b|joblib",
        "dynamic imports": r"(?m)importlib(?!\.util(\.find_spec\(|$))|__import__|runpy",  # find_spec only asks
        "code execution": r"(?<![.\w])(exec|eval|compile)\(|os\.system|subprocess",
    }
    # The one program the package runs, with a command of its own: Java on pycocoevalcap's PTB
    # tokenizer jar, as the COCO caption evaluation does.
    allowed = {(PACKAGE / "metrics.py", "code execution")}
    for path, text in sources.items():
        for what, pattern in forbidden.items():
            assert (path, what) in allowed or not re.search(pattern, text), f"{path.relative_to(REPO)}: {what}"
    assert len(re.findall(r"subprocess\.run\(", sources[PACKAGE / "metrics.py"])) == 1


def test_paths_in_a_checkpoint_config_are_never_imported_or_executed(checkpoint, tmp_path, monkeypatch):
    """A config pointing at a folder of code and a pickle: loading touches neither."""
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil"
    evil.mkdir()
    payload = f"open({str(marker)!r}, 'w').write('x')\n"
    (evil / "__init__.py").write_text(payload)
    (evil / "modeling_evil.py").write_text(payload)
    (evil / "config.json").write_text(json.dumps({"model_type": "bert", "auto_map": {"AutoModel": "modeling_evil.M"}}))

    class Boom:
        def __reduce__(self):
            return (exec, (payload,))

    (evil / "pytorch_model.bin").write_bytes(pickle.dumps(Boom()))
    tampered = shutil.copytree(checkpoint, tmp_path / "tampered")
    config = json.loads((tampered / "config.json").read_text())
    (tampered / "config.json").write_text(json.dumps({**config, "text_encoder": str(evil)}))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(torch, "load", _refuse)

    model = GenerativeMultimodalModel.from_pretrained(tampered)
    assert model.generate_text_from_image(torch.zeros(1, 3, 28, 28), max_new_tokens=2)
    assert not marker.exists() and "evil" not in sys.modules


# == Any prompt, any image (hypothesis) ===================================================
@settings(max_examples=15, deadline=None)
@given(prompt=st.text(min_size=1, max_size=500))
def test_any_prompt_draws_an_image_or_is_refused_when_blank(generator, prompt):
    if not prompt.strip():
        with pytest.raises(InvalidInputError, match="must not be empty"):
            generator.text_to_image(prompt)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = generator.text_to_image(prompt, num_inference_steps=2, seed=0)
    assert image.size == (28, 28) and image.mode == "RGB"
    tokens = len(generator.model.tokenizer(prompt)["input_ids"])
    truncated = any(issubclass(w.category, PromptTruncatedWarning) for w in caught)
    assert truncated == (tokens > generator.model.text_encoder.max_length)


MODES = ["L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16"]


def _image(width: int, height: int, mode: str, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    rgba = Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8))
    if mode in ("P", "CMYK"):
        return rgba.convert("RGB").convert(mode)
    return rgba if mode == "RGBA" else rgba.convert(mode)


@settings(max_examples=15, deadline=None)
@given(
    width=st.integers(1, 300),
    height=st.integers(1, 300),
    mode=st.sampled_from(MODES),
    seed=st.integers(0, 2**32 - 1),
    as_file=st.booleans(),
)
def test_any_image_gets_a_caption(generator, tmp_path_factory, width, height, mode, seed, as_file):
    image = _image(width, height, mode, seed)
    assert image.mode.startswith(mode[0]) and image.size == (width, height)
    source: Image.Image | Path = image
    if as_file:
        source = tmp_path_factory.mktemp("hypothesis") / ("image.jpg" if mode == "CMYK" else "image.png")
        image.save(source)
    caption = generator.image_to_text(source, max_new_tokens=3)
    assert isinstance(caption, str)
    embedding = generator.embed_images([source])
    assert embedding.shape == (1, 32) and torch.isfinite(embedding).all()


@pytest.mark.parametrize("script", ["train.py", "generate_t2i.py", "generate_i2t.py", "evaluate.py"])
@pytest.mark.parametrize("args", [["--help"], ["--no-such-flag"]])
def test_help_and_usage_errors_answer_without_loading_torch(script, args):
    """Answering --help or a bad flag must not wait seconds for torch, transformers, diffusers."""
    result = subprocess.run([sys.executable, "-X", "importtime", str(REPO / script), *args],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == (0 if args == ["--help"] else 2)
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "multimodal.config" in imported
    assert not imported & {"torch", "transformers", "diffusers"}
