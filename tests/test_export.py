"""The ONNX export and its torch-free runner, on a tiny random checkpoint: the graphs equal
PyTorch, the runner draws and captions what PyTorch does, never imports torch, and bad
input is refused in one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from PIL import Image

from conftest import random_images, tiny_config
from multimodal import GenerativeMultimodalModel, SamplingConfig
from multimodal.export import TOLERANCE, export, export_graph
from multimodal.export.__main__ import main as export_main
from multimodal.export.graphs import Graph, Part, graphs
from multimodal.onnx_run import OnnxGenerator
from multimodal.onnx_run.__main__ import main as onnx_main

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
GRAPHS = {"text_encoder", "unet_step", "image_decoder", "image_encoder", "caption_step"}


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "onnx"
    export(checkpoint, out)
    return out


@pytest.fixture(scope="module")
def onnx(exported) -> OnnxGenerator:
    return OnnxGenerator(exported)


def run_module(module: str, *args: str, cwd: Path) -> tuple[subprocess.CompletedProcess, bool]:
    """(the run, whether torch was imported) of `python -m module args`."""
    code = (
        "import runpy, sys\n"
        f"sys.argv = [{module!r}, *{list(args)!r}]\n"
        f"try:\n    runpy.run_module({module!r}, run_name='__main__')\n"
        "except SystemExit as exit:\n    code = exit.code\nelse:\n    code = 0\n"
        "print('torch' in sys.modules, code, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)
    *lines, last = result.stderr.strip().splitlines()
    torch_loaded, exit_code = last.split()
    result.returncode, result.stderr = int(exit_code), "\n".join(lines)
    return result, torch_loaded == "True"


def test_every_graph_equals_pytorch_on_random_and_real_inputs(exported, checkpoint):
    spec = json.loads((exported / "export.json").read_text())
    assert set(spec["graphs"]) == GRAPHS and all((exported / f"{name}.onnx").is_file() for name in GRAPHS)
    for name, differences in spec["largest_difference_from_pytorch"].items():
        assert set(differences) == {"random", "real"}
        assert max(differences.values()) <= TOLERANCE, name
    assert spec["opset"] == 17 and spec["precision"] == "fp32"
    assert len(spec["sampler"]["alphas_cumprod"]) == len(spec["sampler"]["betas"]) == 100  # the tiny config's T
    assert spec["sampler"]["prediction_type"] == "v" and spec["sampler"]["guidance_scale"] == 3.0
    assert (exported / "tokenizer.json").read_bytes() == (checkpoint / "tokenizer.json").read_bytes()


@pytest.mark.parametrize("regularizer", ["kl", "vq"])
def test_a_regularised_latent_exports_and_the_graph_still_regularises(regularizer, tmp_path):
    """The image encoder's graph keeps the autoencoder stage's regulariser: KL's mean, VQ's codes."""
    torch.manual_seed(0)
    model = GenerativeMultimodalModel(tiny_config(latent_regularizer=regularizer, codebook_size=64)).eval()
    model.save_pretrained(tmp_path / "checkpoint")
    export(tmp_path / "checkpoint", tmp_path / "onnx")
    spec = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert max(max(d.values()) for d in spec["largest_difference_from_pytorch"].values()) <= TOLERANCE
    images = random_images(2, 28)
    latents, _ = OnnxGenerator(tmp_path / "onnx").run("image_encoder", images=images.numpy())
    with torch.no_grad():
        expected = model.image_encoder.encode(images)
    np.testing.assert_allclose(latents, expected.numpy(), atol=TOLERANCE)
    if regularizer == "vq":  # every position is one of the codebook's vectors
        codebook = model.image_encoder.regularizer.quantizer.embedding.weight.detach().numpy()
        vectors = latents.transpose(0, 2, 3, 1).reshape(-1, codebook.shape[1])
        nearest = np.abs(vectors[:, None] - codebook[None]).max(axis=-1).min(axis=1)
        assert nearest.max() <= TOLERANCE


def pixel_difference(a, b) -> int:
    return int(np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max())


def test_the_runner_draws_the_pixels_pytorch_draws_from_the_same_noise(onnx, generator):
    prompts = ["a red circle", "a small blue square at the top"]
    for sampling in (SamplingConfig(num_inference_steps=5), SamplingConfig(num_inference_steps=3, guidance_scale=1.0)):
        expected = generator.generate_from_text(prompts, sampling=sampling, generator=torch.Generator().manual_seed(0))
        noise = torch.randn((2, *onnx.spec["latent_shape"]), generator=torch.Generator().manual_seed(0)).numpy()
        for row, got in zip(expected, onnx.draw(prompts, sampling, noise=noise)):
            assert pixel_difference(row[0], got) <= 1  # at most a rounding apart


def test_with_a_negative_prompt_the_runner_draws_what_pytorch_draws(onnx, generator, exported, tmp_path):
    """Guidance away from a negative prompt's condition, one prompt steered and one not (its away
    condition stays the null one), as PyTorch does; the command line's --negative-prompt too."""
    prompts, negatives = ["a red circle", "a small blue square at the top"], ["a blue square at the top", ""]
    sampling = SamplingConfig(num_inference_steps=5)
    expected = generator.generate_from_text(prompts, sampling=sampling, generator=torch.Generator().manual_seed(0),
                                            negative_prompt=negatives)
    noise = torch.randn((2, *onnx.spec["latent_shape"]), generator=torch.Generator().manual_seed(0)).numpy()
    steered, plain = onnx.draw(prompts, sampling, noise=noise, negative_prompts=negatives), onnx.draw(prompts, sampling, noise=noise)
    assert [pixel_difference(row[0], got) for row, got in zip(expected, steered)] <= [1, 1]
    assert pixel_difference(steered[0], plain[0]) > 8 and pixel_difference(steered[1], plain[1]) <= 1
    args = [str(exported), prompts[0], "--steps", "5", "--seed", "0", "--output"]
    assert onnx_main([*args, str(tmp_path / "steered.png"), "--negative-prompt", negatives[0]]) == 0
    assert onnx_main([*args, str(tmp_path / "plain.png")]) == 0
    from_cli = [np.asarray(Image.open(tmp_path / name)) for name in ("steered.png", "plain.png")]
    assert np.array_equal(from_cli[0], onnx.draw(prompts[:1], sampling, seed=0, negative_prompts=negatives[:1])[0])
    assert np.array_equal(from_cli[1], onnx.draw(prompts[:1], sampling, seed=0)[0])


class UNetStepBeforeNegativePrompts(Part):
    """unet_step as exports of format 1 had it: the null condition built in."""

    def forward(self, latents, timestep, text_embedding, token_states, attention_mask, guidance_scale):
        diffusion = self.model.diffusion
        condition = diffusion.stacked_condition((text_embedding, token_states, attention_mask))
        return diffusion.guided_prediction(latents, timestep, condition, guidance_scale, 0.0)


def test_an_export_from_before_negative_prompts_draws_the_same_and_refuses_one_in_one_line(
    onnx, exported, checkpoint, tmp_path, capsys
):
    old = tmp_path / "old"
    shutil.copytree(exported, old)
    spec = json.loads((old / "export.json").read_text())
    del spec["format"]
    (old / "export.json").write_text(json.dumps(spec))
    new = graphs(GenerativeMultimodalModel.from_pretrained(checkpoint).eval(), torch.float32)["unet_step"]
    def before(named: dict) -> dict:
        return {name: value for name, value in named.items() if not name.startswith("away_")}

    export_graph(Graph(UNetStepBeforeNegativePrompts(new.module.model), before(new.inputs), new.outputs,
                       before(new.dynamic_axes)), old / "unet_step.onnx")
    sampling = SamplingConfig(num_inference_steps=4)
    pictures = [OnnxGenerator(folder).draw(["a red circle", "a blue square"], sampling, seed=0) for folder in (old, exported)]
    assert all(np.array_equal(a, b) for a, b in zip(*pictures))  # the new graph draws today's pixels bit for bit
    args = ["a red circle", "--steps", "2", "--output", str(tmp_path / "x.png")]
    assert onnx_main([str(old), *args, "--negative-prompt", "a blue square"]) == 2
    assert onnx_main([str(old), *args]) == 0
    spec["format"] = 99
    (old / "export.json").write_text(json.dumps(spec))
    assert onnx_main([str(old), *args, "--overwrite"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].endswith(f"{old} was exported before negative prompts (its unet_step steers away from no text "
                             "only); export again with python -m multimodal.export")  # fmt: skip
    assert lines[1].endswith(f"{old} has export format 99; this runner reads 1 to 2; export again with python -m multimodal.export")


@pytest.mark.parametrize("prediction_type", ["epsilon", "v", "sample"])
def test_the_runners_ddim_step_is_diffusers(onnx, prediction_type, monkeypatch):
    monkeypatch.setitem(onnx.sampler, "prediction_type", prediction_type)
    scheduler = DDIMScheduler(
        num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", prediction_type=prediction_type.replace("v", "v_prediction"),
        timestep_spacing="trailing", clip_sample=False, set_alpha_to_one=True,
    )  # fmt: skip
    scheduler.set_timesteps(7)
    assert onnx.timesteps(7).tolist() == scheduler.timesteps.tolist()
    rng = np.random.default_rng(0)
    for t in scheduler.timesteps:
        x, prediction = rng.standard_normal((2, 3, 7, 7), dtype=np.float32), rng.standard_normal((2, 3, 7, 7), dtype=np.float32)
        expected = scheduler.step(torch.from_numpy(prediction), t, torch.from_numpy(x)).prev_sample.numpy()
        np.testing.assert_allclose(onnx.ddim_step(prediction, int(t), x, 7), expected, rtol=1e-4, atol=1e-5)


def test_the_runner_writes_the_captions_pytorch_writes(onnx, generator, tmp_path):
    pictures = [tmp_path / "a.png", tmp_path / "b.jpg"]
    for seed, path in enumerate(pictures):
        Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(path)
    expected = generator.batch_image_to_text(pictures, max_new_tokens=8)
    assert onnx.caption(pictures, max_new_tokens=8) == expected


def test_the_runner_never_imports_torch(exported, tmp_path):
    result, torch_loaded = run_module(
        "multimodal.onnx_run", str(exported), "a red circle", "--steps", "2", "--output", "x.png", "--seed", "0",
        "--negative-prompt", "a blue square", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "x.png").size == (28, 28) and not torch_loaded
    result, torch_loaded = run_module("multimodal.onnx_run", str(exported), "--caption", "x.png", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("x.png: ") and not torch_loaded


@pytest.mark.parametrize(
    "args, message",
    [
        (["{out}", "a", "--output", "mine.png"], "mine.png already exists; pass --overwrite"),
        (["{out}", "a", "b", "--output", "one.png"], "give a folder (end it with /)"),
        (["{out}", "a", "--caption", "mine.png"], "not both"),
        (["{out}", "a", "--steps", "0"], "--steps must be at least 1, got 0"),
        (["{tmp}", "a", "--output", "new.png"], "is not an ONNX export (no export.json)"),
        (["{out}", "--caption", "missing.png"], "no such image file: missing.png"),
        (["{out}", "--caption", "mine.png", "--negative-prompt", "a"], "--caption does not draw"),
        (["{out}", "a", "--negative-prompt", " "], "a prompt must not be empty"),
    ],
)  # fmt: skip
def test_the_runner_refuses_bad_input_in_one_line(exported, tmp_path, args, message):
    (tmp_path / "mine.png").write_bytes(b"mine")
    args = [arg.format(out=exported, tmp=tmp_path) for arg in args]
    result, torch_loaded = run_module("multimodal.onnx_run", *args, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 1 and not torch_loaded
    assert (tmp_path / "mine.png").read_bytes() == b"mine"


def test_an_export_replaces_only_an_earlier_export_and_only_with_overwrite(checkpoint, exported, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    for target, extra, message in [
        (exported, [], "already exists; pass --overwrite"),
        (mine, ["--overwrite"], "not an export (no export.json)"),
        (mine / "notes.txt", [], "is a file"),
    ]:
        result, torch_loaded = run_module("multimodal.export", str(checkpoint), str(target), *extra, cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr and not torch_loaded, result.stderr
    assert (mine / "notes.txt").read_text() == "mine"
    stamp = (exported / "export.json").stat().st_mtime_ns
    assert export_main([str(checkpoint), str(exported), "--overwrite"]) == 0
    assert (exported / "export.json").stat().st_mtime_ns != stamp
    assert sorted(path.name for path in exported.parent.iterdir()) == ["onnx"]  # no temporary folder left


def test_fp16_is_written_only_where_onnx_runtime_runs_it(checkpoint, tmp_path, capsys):
    try:
        code = export_main([str(checkpoint), str(tmp_path / "half"), "--precision", "fp16"])
    except SystemExit as exit:
        code = exit.code
    if code == 0:
        assert json.loads((tmp_path / "half" / "export.json").read_text())["precision"] == "fp16"
    else:
        stderr = capsys.readouterr().err
        assert code == 2 and len(stderr.splitlines()) == 1, stderr
        assert "--precision fp16: ONNX Runtime cannot run" in stderr and "export in fp32" in stderr
        assert list(tmp_path.iterdir()) == []  # nothing written, no temporary folder left


@pytest.mark.parametrize("name, damage", [
    ("export.json", lambda data: b"\xb1\x00\xff" + data[:7]),  # binary garbage
    ("export.json", lambda data: data[: len(data) // 2]),  # cut short: no longer JSON
    ("unet_step.onnx", lambda data: data[: len(data) // 2]),
])  # fmt: skip
def test_a_damaged_export_file_is_named_in_one_line(exported, tmp_path, capsys, name, damage):
    copy = tmp_path / "onnx"
    shutil.copytree(exported, copy)
    (copy / name).write_bytes(damage((copy / name).read_bytes()))
    assert onnx_main([str(copy), "a red circle", "--steps", "1", "--output", str(tmp_path / "x.png")]) == 2
    stderr = capsys.readouterr().err
    assert len(stderr.splitlines()) == 1, stderr
    assert f"{copy / name} is damaged or cut short; export again with python -m multimodal.export" in stderr
    assert not (tmp_path / "x.png").exists()
