"""Fine-tuning with LoRA adapters: only the adapters learn, they save and load exactly, merge
into a plain checkpoint, refuse a base they were not trained on, and resume exactly; and the
shapes set draws orange only when asked."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import REPO, random_images, run_in_process, script_main, tiny_config
from multimodal import GenerativeMultimodalModel, ImageTextGenerator, SamplingConfig
from multimodal.adapters import merge
from multimodal.adapters.__main__ import main as adapters_main
from multimodal.data.__main__ import main as data_main
from multimodal.adapters.targets import LORA_TARGETS
from multimodal.config import TrainConfig
from multimodal.data import generate_shapes_dataset, parse_caption_attributes, read_shape_attributes
from multimodal.errors import ConfigError, InvalidInputError, TrainingError
from multimodal.training import Trainer

SAMPLING = SamplingConfig(num_inference_steps=3)


def lora_trainer(base: Path, data: Path, output: Path, resume: bool = False, **overrides) -> Trainer:
    values = dict(
        preset="shapes", data_dir=str(data), output_dir=str(output), epochs=1, diffusion_epochs=1, batch_size=8,
        learning_rate=1e-2, warmup_epochs=0.5, num_workers=0, sample_every_epoch=False, init_from=str(base),
        lora_rank=4,
    )
    return Trainer(None, TrainConfig(**(values | overrides)), resume=resume)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """A tiny base checkpoint, another one, an orange data set and a LoRA run on it (6 steps)."""
    root = tmp_path_factory.mktemp("lora")
    data = generate_shapes_dataset(root / "orange", num_train=24, num_val=8, image_size=28, colors="orange",
                                   progress=False)
    for name, seed in (("base", 0), ("other", 1)):
        torch.manual_seed(seed)
        GenerativeMultimodalModel(tiny_config(freeze_bert=True)).save_pretrained(root / name)
    trainer = lora_trainer(root / "base", data, root / "run")
    trainer.run()
    return {"root": root, "base": root / "base", "other": root / "other", "data": data, "trainer": trainer,
            "adapter": root / "run" / "best"}


def outputs(model: GenerativeMultimodalModel) -> dict:
    images = random_images(2, 28)
    with torch.no_grad():
        return {
            "image_embedding": model.encode_image(images),
            "text_embedding": model.encode_text(["a small orange circle on the left", "a large red square"]),
            "pictures": model.generate_image_from_text(["a small orange circle"], SAMPLING, torch.Generator().manual_seed(0)),
            "captions": model.generate_text_from_image(images, max_new_tokens=5),
        }


def assert_same(a: dict, b: dict, exact: bool = True) -> None:
    assert a["captions"] == b["captions"]
    for name in ("image_embedding", "text_embedding", "pictures"):
        if exact:
            assert torch.equal(a[name], b[name]), name
        else:
            torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)


def test_lora_training_changes_only_the_adapters(setup):
    model = setup["trainer"].model
    base = load_file(str(setup["base"] / "model.safetensors"))
    state = model.state_dict()
    adapters = {name for name in state if ".lora_" in name or ".trainable_tokens_" in name}
    # Every base tensor, buffers too, under its own name once peft's wrapper levels are left out.
    plain = {re.sub(r"(base_layer|token_adapter|original_module)\.", "", name): tensor
             for name, tensor in state.items() if name not in adapters}
    assert set(base) <= set(plain)
    for name, tensor in base.items():
        assert torch.equal(plain[name], tensor), name
    assert {name for name, p in model.named_parameters() if p.requires_grad} <= adapters
    learned = [name for name in adapters if ".lora_B." in name and state[name].abs().sum() > 0]
    assert any(name.startswith("diffusion.") for name in learned)  # both stages trained their adapters
    assert any(name.startswith("text_encoder.") for name in learned)
    # The caption decoder's rows for the captions' words learned, one row for its tied input and output.
    words = model.caption_decoder.lm.transformer.wte.token_adapter
    rows = words.trainable_tokens_delta["default"]
    assert rows is model.caption_decoder.lm.lm_head.token_adapter.trainable_tokens_delta["default"]
    orange = model.tokenizer.convert_tokens_to_ids("orange")
    assert orange in words.token_indices["default"]
    assert not torch.equal(rows, plain["caption_decoder.lm.transformer.wte.weight"][words.token_indices["default"]])
    trainable = sum(p.numel() for name, p in model.named_parameters() if ".lora_" in name)
    assert trainable < 0.05 * sum(tensor.numel() for tensor in base.values())


def test_adapter_folder_is_peft_format_beside_a_pointer_to_its_base(setup):
    adapter = setup["adapter"]
    assert {"adapter_config.json", "adapter_model.safetensors", "base_checkpoint.json"} <= {p.name for p in adapter.iterdir()}
    assert not (adapter / "model.safetensors").exists()
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4
    pointer = json.loads((adapter / "base_checkpoint.json").read_text())
    assert Path(pointer["base_checkpoint"]) == setup["base"].absolute()


def test_saved_adapter_loads_to_identical_outputs(setup):
    trained = outputs(setup["trainer"].ema.module.eval())
    loaded = ImageTextGenerator(setup["base"], device="cpu", adapter=setup["adapter"])
    assert_same(outputs(loaded.model), trained)
    found = ImageTextGenerator(device="cpu", adapter=setup["adapter"])  # the base from the adapter's pointer
    assert found.checkpoint_dir == setup["base"].absolute()
    plain = ImageTextGenerator(setup["base"], device="cpu")
    assert not torch.equal(outputs(plain.model)["text_embedding"], trained["text_embedding"])  # it did change


def test_merge_equals_the_adapter_applied(setup):
    merged = merge(setup["adapter"], setup["root"] / "merged")
    model = GenerativeMultimodalModel.from_pretrained(merged)
    assert not any("lora" in name or "base_layer" in name for name in model.state_dict())
    adapted = ImageTextGenerator(setup["base"], device="cpu", adapter=setup["adapter"]).model
    assert_same(outputs(model), outputs(adapted), exact=False)


def test_a_wrong_base_is_refused_with_one_line(setup):
    with pytest.raises(Exception, match="was trained on"):
        ImageTextGenerator(setup["other"], device="cpu", adapter=setup["adapter"])
    image = setup["root"] / "shape.png"
    Image.new("RGB", (28, 28)).save(image)
    result = run_in_process(script_main("generate_i2t.py"), str(image), "--checkpoint", str(setup["other"]),
                            "--adapter", str(setup["adapter"]), cwd=REPO)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "was trained on" in result.stderr
    result = run_in_process(adapters_main, "merge", str(setup["adapter"]), str(setup["root"] / "m2"),
                            "--base", str(setup["other"]), cwd=REPO)
    assert result.returncode == 2 and "was trained on" in result.stderr and not (setup["root"] / "m2").exists()


def test_overwrite_never_destroys_the_commands_own_input(setup, capsys):
    """Fine-tuning into the base's folder, merging over the adapter's own base or over the
    adapter, a run inside its data folder: refused in one line, before anything is written."""
    base, adapter, data = setup["base"], setup["adapter"], setup["data"]
    before = {path: path.read_bytes() for path in (*base.iterdir(), *adapter.iterdir()) if path.is_file()}
    for output, what in ((base, "the base checkpoint"), (adapter, "the adapter"), (adapter.parent, "the adapter")):
        with pytest.raises(InvalidInputError, match=f"is, holds or lies inside {what}"):
            merge(adapter, output, overwrite=True)
    train = script_main("train.py")
    for flags, what in (
        (["--init-from", str(base), "--lora-rank", "4", "--output-dir", str(base)], "the --init-from checkpoint"),
        (["--output-dir", str(data / "runs"), "--data-dir", str(data)], "the data folder"),
    ):
        with pytest.raises(SystemExit) as stopped:
            train(["--preset", "shapes", "--overwrite", *flags])
        assert stopped.value.code == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and what in error, error
    assert {path: path.read_bytes() for path in before} == before  # every file as it was
    assert not (data / "runs").exists()


def test_lora_without_init_from_is_a_usage_error(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "train.py"), "--preset", "shapes", "--lora-rank", "4",
                             "--output-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--lora-rank needs --init-from" in result.stderr


def test_lora_resume_is_exact(setup, tmp_path):
    """Stopped after step 2 and resumed, a LoRA run ends with the adapters of an uninterrupted one."""
    straight = lora_trainer(setup["base"], setup["data"], tmp_path / "straight")
    straight.run()
    stopped = lora_trainer(setup["base"], setup["data"], tmp_path / "stopped")
    original = stopped.train_step

    def step(batches):
        metrics = original(batches)
        if stopped.step + 1 == 2:
            stopped.stop_signal = "SIGTERM"
        return metrics

    stopped.train_step = step
    stopped.run()
    resumed = lora_trainer(setup["base"], setup["data"], tmp_path / "stopped", resume=True)
    assert resumed.step == 2
    resumed.run()
    for name, tensor in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    a = load_file(str(tmp_path / "straight" / "latest" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "stopped" / "latest" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=name)


def test_orange_is_drawn_only_when_asked(tmp_path):
    standard = generate_shapes_dataset(tmp_path / "standard", num_train=180, num_val=4, image_size=28, progress=False)
    params = json.loads((standard / "shapes.json").read_text())
    assert "colors" not in params  # a standard set's record is what it always was
    annotations = json.loads((standard / "annotations" / "captions_train2017.json").read_text())
    colours = {image["shape"]["color"] for image in annotations["images"]}
    assert colours == {"red", "green", "blue", "yellow", "purple", "cyan"}

    result = run_in_process(data_main, "shapes", str(tmp_path / "orange"), "--colors", "orange", "--num-train", "30",
                            "--num-val", "4", "--image-size", "28", cwd=REPO)
    assert result.returncode == 0, result.stderr
    orange = tmp_path / "orange"
    annotations = json.loads((orange / "annotations" / "captions_train2017.json").read_text())
    assert {image["shape"]["color"] for image in annotations["images"]} == {"orange"}
    assert all("orange" in a["caption"] for a in annotations["annotations"])
    for image in annotations["images"][:10]:
        read = read_shape_attributes(Image.open(orange / "train2017" / image["file_name"]))
        assert read is not None and read["color"] == "orange"
    assert parse_caption_attributes("a small orange circle on the left")["color"] == "orange"
    pixels = np.asarray(Image.open(orange / "train2017" / annotations["images"][0]["file_name"]))
    assert (pixels.reshape(-1, 3) == (240, 140, 20)).all(axis=1).any()

    result = run_in_process(data_main, "shapes", str(tmp_path / "x"), "--colors", "pink", cwd=REPO)
    assert result.returncode == 2 and "--colors has the unknown colour 'pink'" in result.stderr
    assert not (tmp_path / "x").exists()


def test_replay_mixes_the_earlier_set_into_training_under_ids_of_its_own(setup, tmp_path):
    """--replay-images N adds N images of an earlier set (a fixed choice) after the new ones; their
    image ids never meet the new set's, so the latent cache cannot confuse the two."""
    earlier = generate_shapes_dataset(tmp_path / "standard", num_train=40, num_val=4, image_size=28, progress=False)
    trainer = lora_trainer(setup["base"], setup["data"], tmp_path / "run", replay_images=10, replay_data=str(earlier))
    mixed = trainer.train_set
    assert len(mixed) == 24 + 10
    items = [mixed[i] for i in range(len(mixed))]
    new_ids, replay_ids = {item["image_id"] for item in items[:24]}, {item["image_id"] for item in items[24:]}
    assert len(replay_ids) == 10 and not new_ids & replay_ids
    assert all("orange" in item["caption"] for item in items[:24])
    assert not any("orange" in item["caption"] for item in items[24:])
    assert set(mixed.references) == new_ids | replay_ids
    for item in items[24:]:
        assert item["caption"] in mixed.references[item["image_id"]]
    again = lora_trainer(setup["base"], setup["data"], tmp_path / "again", replay_images=10, replay_data=str(earlier))
    assert [again.train_set[i]["caption"] for i in range(24, 34)] == [item["caption"] for item in items[24:]]
    trainer.run()  # trains on the mixture
    assert (tmp_path / "run" / "best" / "adapter_model.safetensors").is_file()


def test_replay_without_its_data_says_which_flag_names_it(setup, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the base records no data set: the default data/shapes is not here
    with pytest.raises(TrainingError, match="name one with --replay-data"):
        lora_trainer(setup["base"], setup["data"], tmp_path / "run", replay_images=10)
    with pytest.raises(ConfigError, match="init-from"):
        TrainConfig(preset="shapes", replay_images=5)  # replay needs --init-from


def test_lora_targets_with_a_plus_are_added_to_the_default():
    plus = TrainConfig(preset="shapes", init_from="base", lora_rank=4, lora_targets="+image_decoder.layers, image_encoder.backbone")
    assert plus.lora_targets_list == LORA_TARGETS.split(",") + ["image_decoder.layers", "image_encoder.backbone"]
    assert TrainConfig(preset="shapes", lora_targets="qkv").lora_targets_list == ["qkv"]
