"""The design documents' sizes and modes: any image size its encoder's downsampling factor divides
(256 px → 8×8 at f=32, 32×32 at f=8), the images-only layout that trains an unconditional model,
and a diffusion run on the frozen autoencoder of another run (issue 38)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import tiny_config
from multimodal import GenerativeMultimodalModel
from multimodal import presets
from multimodal.config import ModelConfig, TrainConfig, model_preset
from multimodal.data import detect_layout
from multimodal.data.__main__ import main as data_main
from multimodal.errors import ConfigError, DatasetLayoutError, TrainingError
from multimodal.models.unet import AttentionBlock
from multimodal.train import build_parser, configs_from_args
from multimodal.training import Trainer

TINY_RUN = dict(num_workers=0, sample_every_epoch=False, warmup_epochs=0, batch_size=4, learning_rate=1e-3)


def picture_folder(root, count: int = 8, size: int = 28):
    """`count` distinct pictures and nothing else: a folder without captions."""
    root.mkdir(parents=True)
    for i in range(count):
        Image.new("RGB", (size, size), (30 * i, 255 - 30 * i, 60 + 20 * i)).save(root / f"{i:02d}.png")
    return root


def trained_parameters(run_dir) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "best" / "model.safetensors"))


# -- image sizes ------------------------------------------------------------------------------
def test_the_latent_side_is_the_image_size_over_the_downsampling_factor():
    assert (ModelConfig(image_size=256).latent_size, ModelConfig(image_size=256).unet_levels) == (8, [8, 4])
    two_stage = ModelConfig(image_size=256, downsampling_factor=8, attention_resolutions="16,8")
    assert (two_stage.latent_size, two_stage.unet_levels) == (32, [32, 16, 8, 4])
    assert ModelConfig(image_size=256, latent_size=32).latent_size == 32  # f=8 implied
    assert ModelConfig(image_size=256, image_encoder="efficientnet_lite0").latent_size == 8  # its fixed stride 32
    assert ModelConfig(image_size=512).attention_resolutions == "4"  # the lowest level by default
    for size in (28, 56, 112, 224):  # the sizes 7·2^k keep their 7×7 latent
        assert ModelConfig(image_size=size).latent_size == 7
    with pytest.raises(ConfigError, match="attention_resolutions 16 is not a level of the UNet over a 8×8 latent"):
        ModelConfig(image_size=256, attention_resolutions="16,8")
    with pytest.raises(ConfigError, match="image_size must be divisible by 32"):
        ModelConfig(image_size=100)
    with pytest.raises(ConfigError, match="downsampling_factor must be a power of 2"):
        ModelConfig(image_size=240, downsampling_factor=6)
    with pytest.raises(ConfigError, match=r"latent_size must be image_size / downsampling_factor \(256 / 8 = 32\)"):
        ModelConfig(image_size=256, downsampling_factor=8, latent_size=8)
    with pytest.raises(ConfigError, match="downsampling_factor must be 32 for efficientnet_lite0"):
        ModelConfig(image_size=256, downsampling_factor=8, image_encoder="efficientnet_lite0")
    args = build_parser().parse_args(["--image-size", "256", "--downsampling-factor", "8",
                                      "--attention-resolutions", "16,8", "--image-encoder", "simple_cnn"])
    assert configs_from_args(args)[0].latent_size == 32


def test_the_presets_and_a_config_json_written_before_the_factor_existed_are_unchanged(tmp_path):
    for name in presets.names():
        config = model_preset(name)
        assert (config.latent_size, config.attention_resolutions, config.unet_levels) == (7, "7", [7])
        assert config.downsampling_factor is None  # nothing new recorded: the factor is image / latent
    torch.manual_seed(0)
    model = GenerativeMultimodalModel(tiny_config())
    model.save_pretrained(tmp_path)
    recorded = json.loads((tmp_path / "config.json").read_text())
    del recorded["downsampling_factor"]  # a checkpoint's config.json from before this field
    assert (recorded["image_size"], recorded["latent_size"], recorded["attention_resolutions"]) == (28, 7, "7")
    (tmp_path / "config.json").write_text(json.dumps(recorded))
    loaded = GenerativeMultimodalModel.from_pretrained(tmp_path)
    assert loaded.config.replace(bert_config=None) == model.config.replace(bert_config=None)  # BERT's: as saved
    images = torch.rand(2, 3, 28, 28) * 2 - 1
    model.eval()
    assert torch.equal(loaded.encode_latent(images), model.encode_latent(images))
    assert list(loaded.state_dict()) == list(model.state_dict())


def test_a_256_px_run_with_a_32x32_latent_trains_two_steps_with_attention_at_16_and_8(tmp_path):
    data = picture_folder(tmp_path / "pictures", count=6, size=256)
    config = tiny_config(image_size=256, downsampling_factor=8, attention_resolutions="16,8", freeze_bert=True,
                         encoder_width=4, decoder_width=4, latent_channels=8, unet_width=16, pool_channels=2)
    torch.manual_seed(0)
    trainer = Trainer(config, TrainConfig(data_dir=str(data), output_dir=str(tmp_path / "run"), epochs=1,
                                          max_steps=2, **TINY_RUN | dict(batch_size=2)))
    unet = trainer.model.diffusion.unet
    attends = [isinstance(block, AttentionBlock) for block in unet.down_attention]
    assert attends == [False, True, True, False]  # one block a level: 32, 16, 8, 4
    assert trainer.model.encode_latent(torch.zeros(1, 3, 256, 256)).shape == (1, 8, 32, 32)
    final = trainer.run()
    assert final["step"] == 2 and torch.isfinite(torch.tensor(final["train_diff"]))
    drawn = GenerativeMultimodalModel.from_pretrained(tmp_path / "run" / "best").image_decoder(torch.zeros(1, 8, 32, 32))
    assert drawn.shape == (1, 3, 256, 256) and drawn.abs().max() <= 1


# -- images only: an unconditional model -------------------------------------------------------
def test_a_folder_of_images_alone_is_detected_and_checked_as_images_only(tmp_path, capsys):
    data = picture_folder(tmp_path / "pictures")
    assert detect_layout(data) == "images-only"
    assert data_main(["check", str(data)]) == 0
    out = capsys.readouterr().out
    assert "images-only: 8 images, no captions — trains the autoencoder and an unconditional diffusion model" in out
    assert "no captions" in out.splitlines()[1]  # the train split's line
    (data / "captions.json").write_text("{}")  # captions in no layout this reads: never trained without them
    with pytest.raises(DatasetLayoutError, match="captions.json, but in no dataset layout this reads"):
        detect_layout(data)
    assert data_main(["check", str(data)]) == 2
    assert "--data-format images-only" in capsys.readouterr().out
    assert data_main(["check", str(data), "--data-format", "images-only"]) == 0  # asked for: the captions unread


def test_images_only_trains_the_autoencoder_and_an_unconditional_diffusion_model(tmp_path):
    data = picture_folder(tmp_path / "pictures")
    torch.manual_seed(0)
    trainer = Trainer(tiny_config(freeze_bert=True), TrainConfig(data_dir=str(data), output_dir=str(tmp_path / "run"),
                                                                 epochs=1, max_steps=1, **TINY_RUN))
    assert [stage.loss_weights for stage in trainer.stages] == [{"reconstruction": 0.5, "diffusion": 0.1}]
    before = {name: p.clone() for name, p in trainer.model.named_parameters() if name.startswith("caption_decoder.")}
    trainer.run()
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert {"train_rec", "train_diff"} <= set(metrics) and not {"train_cont", "train_cap", "val_i2t_R@1"} & set(metrics)
    model = GenerativeMultimodalModel.from_pretrained(tmp_path / "run" / "best")
    config = json.loads((tmp_path / "run" / "best" / "config.json").read_text())
    assert model.config.unconditional and config["cond_drop"] == 1.0
    assert config["contrastive_weight"] == config["caption_weight"] == config["fast_path_weight"] == 0
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters() if name in before)
    GenerativeMultimodalModel(tiny_config()).save_pretrained(tmp_path / "conditional")
    with pytest.raises(TrainingError, match="has no captions: fine-tuning .* with --autoencoder-frozen"):
        Trainer(None, TrainConfig(data_dir=str(data), output_dir=str(tmp_path / "again"), epochs=1,
                                  init_from=str(tmp_path / "conditional"), **TINY_RUN))


# -- a diffusion run on a frozen autoencoder ---------------------------------------------------
def test_a_diffusion_run_on_the_frozen_autoencoder_of_another_trains_only_the_unet(shapes_dir, tmp_path):
    torch.manual_seed(0)
    Trainer(tiny_config(freeze_bert=True), TrainConfig(data_dir=str(shapes_dir), output_dir=str(tmp_path / "first"),
                                                       epochs=1, max_steps=1, **TINY_RUN)).run()
    first = tmp_path / "first"
    flags = ["--init-from", str(first), "--autoencoder-frozen", "--epochs", "0", "--diffusion-epochs", "1",
             "--noise-schedule", "linear", "--prediction-type", "epsilon", "--data-dir", str(shapes_dir),
             "--output-dir", str(tmp_path / "second"), "--max-steps", "2", "--batch-size", "4", "--num-workers", "0",
             "--no-sample-every-epoch"]
    model_config, train_config = configs_from_args(build_parser().parse_args(flags))
    assert (model_config.noise_schedule, model_config.prediction_type) == ("linear", "epsilon")
    trainer = Trainer(model_config, train_config.replace(init_from=str(first / "best")))
    assert [stage.name for stage in trainer.stages] == ["diffusion"]
    trainer.run()
    before, after = trained_parameters(first), trained_parameters(tmp_path / "second")
    kept = [name for name in before if name.startswith(("image_encoder.", "image_decoder.layers.", "text_encoder.",
                                                        "caption_decoder."))]
    assert kept and all(torch.equal(before[name], after[name]) for name in kept)
    assert not torch.equal(before["diffusion.unet.conv_in.weight"], after["diffusion.unet.conv_in.weight"])
    assert GenerativeMultimodalModel.from_pretrained(tmp_path / "second" / "best").config.noise_schedule == "linear"


def test_the_frozen_autoencoder_and_zero_epochs_are_refused_where_they_cannot_work(tmp_path):
    with pytest.raises(ConfigError, match="autoencoder_frozen needs --init-from RUN"):
        TrainConfig(autoencoder_frozen=True)
    with pytest.raises(ConfigError, match="epochs 0 leaves the encoders as they start"):
        TrainConfig(epochs=0, diffusion_epochs=1)
    with pytest.raises(ConfigError, match="nothing would train"):
        TrainConfig(epochs=0)
    assert TrainConfig(epochs=0, autoencoder_epochs=1).epochs == 0  # the autoencoder alone
    GenerativeMultimodalModel(tiny_config()).save_pretrained(tmp_path / "run")
    args = build_parser().parse_args(["--init-from", str(tmp_path / "run"), "--noise-schedule", "linear"])
    with pytest.raises(ValueError, match="--noise-schedule cannot change it .*--autoencoder-frozen"):
        configs_from_args(args)
    args = build_parser().parse_args(["--init-from", str(tmp_path / "run"), "--autoencoder-frozen", "--epochs", "0",
                                      "--diffusion-epochs", "1", "--image-size", "56"])
    with pytest.raises(ValueError, match="keeps every part of .* but its diffusion UNet; --image-size cannot"):
        configs_from_args(args)
