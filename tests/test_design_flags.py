"""The design documents' flags and config keys: `--data_dir` as `--data-dir`, their names for our
settings (`--ldm_epochs` for `--diffusion-epochs`), and a seed design's flat config dict as one
`--config` file. Parsers only: nothing here trains."""

from __future__ import annotations

import json
import re

import pytest

from multimodal.config import DESIGN_NAMES, split_run_config
from multimodal.data.__main__ import build_parser as data_parser
from multimodal.generate_t2i import build_parser as t2i_parser
from multimodal.train import build_parser as train_parser
from multimodal.train import configs_from_args, main as train_main

# The seed design's config dict, as it writes it.
SEED_CONFIG = {"freeze_bert": False, "learning_rate": 2e-4, "warmup_epochs": 2, "contrastive_weight": 1.0,
               "recon_weight": 0.5, "diffusion_weight": 0.1}


def parsed(parser, *args: str) -> dict:
    return vars(parser.parse_args(list(args)))


@pytest.mark.parametrize("theirs, ours, field, value", [
    (["--data_dir", "data/my_set"], ["--data-dir", "data/my_set"], "data_dir", "data/my_set"),
    (["--image_size", "112"], ["--image-size", "112"], "image_size", 112),
    (["--vae_epochs", "3"], ["--autoencoder-epochs", "3"], "autoencoder_epochs", 3),
    (["--ldm_epochs", "4"], ["--diffusion-epochs", "4"], "diffusion_epochs", 4),
    (["--vae_lr", "0.0005"], ["--autoencoder-learning-rate", "0.0005"], "autoencoder_learning_rate", 5e-4),
    (["--ldm_lr", "0.003"], ["--diffusion-learning-rate", "0.003"], "diffusion_learning_rate", 3e-3),
    (["--num_embeddings", "512"], ["--codebook-size", "512"], "codebook_size", 512),
    (["--commitment_cost", "0.3"], ["--vq-commitment", "0.3"], "vq_commitment", 0.3),
    (["--latent_dim", "64"], ["--latent-channels", "64"], "latent_channels", 64),
    (["--noise_steps", "500"], ["--num-timesteps", "500"], "num_timesteps", 500),
    (["--vae_batch_size", "8"], ["--batch-size", "8"], "batch_size", 8),
    (["--learning_rate", "0.0001"], ["--lr", "0.0001"], "learning_rate", 1e-4),
    (["--learning-rate", "0.0001"], ["--lr", "0.0001"], "learning_rate", 1e-4),
    (["--batch_size=4"], ["--batch-size", "4"], "batch_size", 4),
    (["--no_freeze_bert"], ["--no-freeze-bert"], "freeze_bert", False),
])  # fmt: skip
def test_train_py_takes_the_documents_flags_as_ours(theirs, ours, field, value):
    parser = train_parser()
    assert parsed(parser, *theirs) == parsed(parser, *ours)
    assert parsed(parser, *theirs)[field] == value


def test_the_generators_flags_in_both_spellings_and_the_prompts_untouched():
    parser = t2i_parser()
    theirs = parsed(parser, "a_b c_d", "--num_samples", "16", "--num_inference_steps=20", "--negative_prompt=x_y")
    ours = parsed(parser, "a_b c_d", "--num-samples", "16", "--steps", "20", "--negative-prompt", "x_y")
    assert theirs == ours
    assert theirs["prompts"] == ["a_b c_d"] and theirs["negative_prompt"] == "x_y" and theirs["num_samples"] == 16
    assert parsed(parser, "--", "--a_b")["prompts"] == ["--a_b"]  # after --, a prompt, however it looks


def test_help_lists_the_dashed_flags_only():
    help_text = train_parser().format_help()
    assert "--data-dir" in help_text and "--diffusion-epochs" in help_text
    assert re.findall(r"--\w+_\w*", help_text) == []


def test_a_flag_that_stores_false_is_not_taken_by_its_fields_name():
    parser = data_parser()
    assert parsed(parser, "check", "d", "--no_open_images")["open_images"] is False
    with pytest.raises(SystemExit) as stopped:  # --open_images would mean the opposite of --no-open-images
        parser.parse_args(["check", "d", "--open_images"])
    assert stopped.value.code == 2


@pytest.mark.parametrize("parser, args, message", [
    (train_parser, ["--learning-rat", "1"], "unrecognized argument --learning-rat (did you mean --lr?)"),
    (train_parser, ["--num_embedings", "8"], "unrecognized argument --num_embedings (did you mean --codebook-size?)"),
    (train_parser, ["--latent_dims", "8"], "unrecognized argument --latent_dims (did you mean --latent-channels?)"),
    (train_parser, ["--batch_szie", "4"], "unrecognized argument --batch_szie (did you mean --batch-size?)"),
    (t2i_parser, ["a", "--num_embeddings", "8"],
     "unrecognized argument --num_embeddings (the design documents' name for --codebook-size: "),
])  # fmt: skip
def test_a_typo_gets_the_right_flag_and_a_documents_name_is_never_misread(parser, args, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        parser().parse_args(args)
    error = capsys.readouterr().err
    assert stopped.value.code == 2 and message in error
    assert ("did you mean" in error) == ("did you mean" in message)  # a documents' name: no guess at another flag
    assert len(error.strip().splitlines()) == 1


def test_a_flat_config_file_fills_both_configs(tmp_path):
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(SEED_CONFIG | {"preset": "shapes", "vae_epochs": 1, "num_embeddings": 64}))
    model, train = configs_from_args(train_parser().parse_args(["--config", str(path), "--warmup_epochs", "1"]))
    # The shapes preset's own values differ (frozen BERT, lr 1e-3, warm-up 0.25): the file's count.
    assert (model.freeze_bert, model.contrastive_weight, model.recon_weight, model.diffusion_weight) == (
        False, 1.0, 0.5, 0.1)
    assert model.codebook_size == 64 and model.image_size == 56
    assert (train.learning_rate, train.autoencoder_epochs, train.preset) == (2e-4, 1, "shapes")
    assert train.warmup_epochs == 1.0  # a flag beside the file wins


def test_split_run_config_from_python():
    model, train = split_run_config(SEED_CONFIG | {"ldm_epochs": 3, "noise_steps": 200})
    assert model == {"freeze_bert": False, "contrastive_weight": 1.0, "recon_weight": 0.5, "diffusion_weight": 0.1,
                     "num_timesteps": 200}
    assert train == {"learning_rate": 2e-4, "warmup_epochs": 2, "diffusion_epochs": 3}
    assert set(DESIGN_NAMES) >= {"vae_epochs", "ldm_epochs", "vae_lr", "ldm_lr", "num_embeddings", "commitment_cost",
                                 "latent_dim", "noise_steps", "vae_batch_size"}


@pytest.mark.parametrize("values, message", [
    (SEED_CONFIG | {"recon_wieght": 0.5}, "unknown key 'recon_wieght' (did you mean recon_weight?)"),
    ({"vae_lr": 1e-3, "autoencoder_learning_rate": 1e-3}, "keys 'vae_lr' and 'autoencoder_learning_rate' both set"),
])
def test_a_bad_flat_config_is_one_line_and_exit_2(values, message, tmp_path, capsys):
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(values))
    with pytest.raises(SystemExit) as stopped:
        train_main(["--config", str(path), "--output-dir", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert stopped.value.code == 2 and message in error and "Traceback" not in error
    assert len(error.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
