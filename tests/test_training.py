"""train.py and the Trainer: end to end, resuming, the text cache, and refusing bad input."""

from __future__ import annotations

import math
import os
import warnings

import pandas as pd
import pytest
import torch

from conftest import COCO_MINI, TINY_FLAGS, run_recording, run_train, tiny_config, tiny_trainer, train_in_process
from multimodal import GenerativeMultimodalModel
from multimodal.config import TrainConfig
from multimodal.data import open_split
from multimodal.training import samples
from multimodal.training.samples import write_sample_sheet
from multimodal.training.stages import learning_rate, plan_stages
from multimodal.training.text_cache import TextFeatureCache
from multimodal.training.trainer import caption_words, default_num_workers


def test_learning_rate_warms_up_then_decays_to_zero():
    rates = [learning_rate(step, 100, 10, 1.0) for step in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:]))
    assert learning_rate(100, 100, 10, 1.0) == pytest.approx(0.0)
    assert rates[55] == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))


def test_stages_split_the_steps_and_own_their_losses_and_learning_rate():
    weights = {"contrastive": 1.0, "caption": 1.0, "fast_path": 0.5, "diffusion": 0.1}
    joint = plan_stages(TrainConfig(epochs=2, warmup_epochs=0.5), 10, weights)
    assert [(s.name, s.first_step, s.end_step, s.warmup_steps) for s in joint] == [("joint", 0, 20, 5)]
    assert joint[0].loss_weights == weights and not joint[0].find_unused_parameters
    staged = plan_stages(TrainConfig(epochs=2, diffusion_epochs=3, warmup_epochs=0.5), 10, weights)
    encoders, diffusion = staged
    assert (encoders.name, encoders.end_step, diffusion.first_step, diffusion.end_step) == ("encoders", 20, 20, 50)
    assert "diffusion" not in encoders.loss_weights and encoders.find_unused_parameters
    assert diffusion.loss_weights == {"diffusion": 1.0, "fast_path": 0.5} and diffusion.start_from_ema
    assert diffusion.is_trained("diffusion.unet.conv_in.weight") and not diffusion.is_trained("image_encoder.x")
    assert diffusion.is_trained("image_decoder.embedding_to_latent.0.weight")
    assert not diffusion.is_trained("image_decoder.layers.0.weight")
    assert diffusion.learning_rate(20) == pytest.approx(2e-4 / diffusion.warmup_steps)  # its own warm-up
    assert encoders.learning_rate(19) < 0.02 * 2e-4  # the first stage's cosine ends with it
    own = plan_stages(TrainConfig(epochs=2, diffusion_epochs=3, diffusion_learning_rate=1e-3), 10, weights)
    assert own[0].peak_learning_rate == 2e-4 and own[1].peak_learning_rate == 1e-3
    cut = plan_stages(TrainConfig(epochs=2, diffusion_epochs=3, max_steps=15), 10, weights)
    assert [(s.name, s.end_step) for s in cut] == [("encoders", 15)]


def test_each_stage_validates_the_losses_it_trains_and_best_follows_the_last_stage(shapes_dir, tmp_path):
    trainer = tiny_trainer(shapes_dir, tmp_path, epochs=1, diffusion_epochs=1)
    trainer.run()
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert list(metrics["stage"]) == ["encoders", "diffusion"]
    encoders, diffusion = metrics.iloc[0], metrics.iloc[1]
    assert encoders["train_diff"] != encoders["train_diff"]  # NaN: the first stage trains no diffusion
    parts = ["cont", "rec", "fast", "cap"]
    weights = trainer.model.loss_weights()
    names = {"cont": "contrastive", "rec": "reconstruction", "fast": "fast_path", "cap": "caption"}
    for split in ("train", "val"):
        total = sum(weights[names[p]] * encoders[f"{split}_{p}"] for p in parts)
        assert encoders[f"{split}_loss"] == pytest.approx(total, rel=1e-4)
        total = diffusion[f"{split}_diff"] + weights["fast_path"] * diffusion[f"{split}_fast"]
        assert diffusion[f"{split}_loss"] == pytest.approx(total, rel=1e-5)
    assert trainer.best["stage"] == "diffusion"
    best = GenerativeMultimodalModel.from_pretrained(tmp_path / "best").state_dict()
    latest = GenerativeMultimodalModel.from_pretrained(tmp_path / "latest").state_dict()
    assert all(torch.equal(best[name], latest[name]) for name in best)  # the diffusion epoch is the best


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_diffusion_stage_trains_on_cached_latents_in_each_precision(shapes_dir, tmp_path, precision):
    # bf16 is what `auto` picks on CUDA and on CPUs with bf16 units; the latent cache must work under it.
    trainer = tiny_trainer(shapes_dir, tmp_path, epochs=1, diffusion_epochs=1, cache_images=True,
                           precision=precision)
    trainer.run()
    assert len(trainer.latent_cache.store) == len(trainer.train_set)
    assert all(latent.dtype == torch.float16 for latent in trainer.latent_cache.store.values())
    assert math.isfinite(pd.read_csv(tmp_path / "metrics.csv")["train_diff"].iloc[-1])


def test_trainer_writes_every_output_and_a_loadable_checkpoint(shapes_dir, tmp_path):
    trainer = tiny_trainer(shapes_dir, tmp_path, sample_every_epoch=True)
    final = trainer.run()
    assert trainer.step == trainer.total_steps == 6  # 2 epochs of ceil(24 / 8)
    for name in ["latest/model.safetensors", "best/model.safetensors", "metrics.csv", "curves.png",
                 "samples/epoch_001.png", "samples/epoch_002.png"]:
        assert (tmp_path / name).is_file(), name
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert list(metrics["epoch"]) == [1, 2] and list(metrics["step"]) == [3, 6]
    for column in ["train_loss", "train_cont", "train_rec", "train_fast", "train_cap", "train_diff", "val_loss",
                   "val_i2t_R@1", "val_i2t_R@5", "val_t2i_R@1", "val_t2i_R@5"]:
        assert metrics[column].notna().all(), column
    assert final["val_loss"] == pytest.approx(metrics["val_loss"].iloc[-1])
    model = GenerativeMultimodalModel.from_pretrained(tmp_path / "latest")
    # latest/ holds the EMA weights, which are what generation uses
    ema = trainer.ema.module.state_dict()
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, ema[name].cpu(), msg=name)


def test_frozen_bert_runs_once_per_distinct_caption(shapes_dir, tmp_path):
    trainer = tiny_trainer(shapes_dir, tmp_path, epochs=3)
    trainer.run()
    distinct = len(trainer.text_cache.store)
    calls_after_run = trainer.text_cache.bert_calls
    assert 0 < distinct <= len(trainer.train_set.captions) + len(trainer.val_set.captions)
    trainer.total_steps += trainer.steps_per_epoch  # one more epoch: only captions never seen may need BERT
    trainer._run_epoch(3)
    assert trainer.text_cache.bert_calls - calls_after_run <= trainer.steps_per_epoch
    assert len(trainer.text_cache.store) >= distinct


def test_text_cache_serves_berts_states_with_zeros_at_the_padding():
    model = GenerativeMultimodalModel(tiny_config(freeze_bert=True))
    cache = TextFeatureCache(model.text_encoder)
    captions = ["a red circle", "a large blue square is on the left", "a red circle"]
    tokens = model.text_encoder.tokenize(captions)
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    served = cache.states(captions, ids, mask)
    expected = model.text_encoder.token_states(ids, mask) * mask[..., None]
    assert served.shape == expected.shape and served.dtype == torch.float32
    torch.testing.assert_close(served, expected, atol=2e-3, rtol=2e-3)  # stored in float16
    assert cache.bert_calls == 1 and len(cache.store) == 2
    wider = torch.nn.functional.pad(ids, (0, 3)), torch.nn.functional.pad(mask, (0, 3))
    assert cache.states(captions, *wider)[:, -3:].abs().max() == 0 and cache.bert_calls == 1


def test_text_cache_stays_under_its_cap_and_recomputes_what_it_dropped():
    model = GenerativeMultimodalModel(tiny_config(freeze_bert=True))
    captions = [f"caption number {i} of a long list" for i in range(40)]
    tokens = model.text_encoder.tokenize(captions)
    expected = TextFeatureCache(model.text_encoder).states(captions, tokens["input_ids"], tokens["attention_mask"])
    slot_bytes = model.text_encoder.max_length * model.text_encoder.hidden_size * 2  # float16
    cache = TextFeatureCache(model.text_encoder, max_bytes=10 * slot_bytes)
    for start in range(0, 40, 4):
        batch = slice(start, start + 4)
        served = cache.states(captions[batch], tokens["input_ids"][batch], tokens["attention_mask"][batch])
        torch.testing.assert_close(served, expected[batch])
        assert cache.bytes <= 10 * slot_bytes
    assert list(cache.store) == captions[-10:] and cache.evicted == 30  # the least recently used went
    calls = cache.bert_calls
    again = cache.states(captions[:2], tokens["input_ids"][:2], tokens["attention_mask"][:2])  # dropped: computed again
    assert cache.bert_calls == calls + 1
    torch.testing.assert_close(again, expected[:2])
    cache.states(captions[-1:], tokens["input_ids"][-1:], tokens["attention_mask"][-1:])  # kept: no BERT
    assert cache.bert_calls == calls + 1


def test_resume_continues_the_step_count_schedule_and_losses(shapes_dir, tmp_path):
    """Stopped at step 3 and resumed, a run takes the same steps as an uninterrupted one."""
    straight = run_recording(tiny_trainer(shapes_dir, tmp_path / "straight"))
    first = run_recording(tiny_trainer(shapes_dir, tmp_path / "stopped"), stop_at=3)
    resumed_trainer = tiny_trainer(shapes_dir, tmp_path / "stopped", resume=True)
    assert resumed_trainer.step == 3
    second = run_recording(resumed_trainer)
    assert resumed_trainer.step == 6
    assert len(first) == 3 and len(second) == 3
    for expected, actual in zip(straight, first + second):
        assert actual["lr"] == pytest.approx(expected["lr"], rel=1e-9)
        assert actual["loss"] == pytest.approx(expected["loss"], rel=1e-4, abs=1e-5)


def test_compiled_training_matches_eager_and_saves_plain_parameter_names(shapes_dir, tmp_path, monkeypatch):
    """--compile changes how the parts run, not what they compute or how checkpoints are named.
    Dynamo captures the graphs for real; only inductor's C++ code generation (a minute and a
    half here) is swapped for the aot_eager backend."""
    compile_module = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self: compile_module(self, backend="aot_eager"))
    eager = tiny_trainer(shapes_dir, tmp_path / "eager", max_steps=2)
    compiled = tiny_trainer(shapes_dir, tmp_path / "compiled", max_steps=2, compile=True)
    assert compiled.model.diffusion.unet._compiled_call_impl is not None
    batch = eager.collate([eager.train_set[i] for i in range(8)])
    for step in range(2):  # the same noise for both (the two trainers share torch's random state)
        torch.manual_seed(step)
        expected = eager.train_step([batch])
        torch.manual_seed(step)
        actual = compiled.train_step([batch])
        for name in ("loss", "cap", "diff"):
            assert actual[name] == pytest.approx(expected[name], rel=1e-4), name
    compiled.run()
    saved = GenerativeMultimodalModel.from_pretrained(tmp_path / "compiled" / "latest").state_dict()
    assert saved.keys() == eager.model.state_dict().keys()


def test_loader_workers_default_to_the_cores_this_process_may_use(shapes_dir, tmp_path):
    trainer = tiny_trainer(shapes_dir, tmp_path, num_workers=None)
    assert trainer.num_workers == min(16, len(os.sched_getaffinity(0))) == default_num_workers()
    assert tiny_trainer(shapes_dir, tmp_path, num_workers=3).num_workers == 3


def test_train_py_runs_three_steps_and_writes_latest(shapes_dir, tmp_path):
    result = run_train("--preset", "shapes", "--data-dir", str(shapes_dir), "--output-dir", str(tmp_path),
                       "--max-steps", "3", "--batch-size", "4", *TINY_FLAGS)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "latest" / "model.safetensors").is_file()
    assert "Traceback" not in result.stderr
    resumed = train_in_process("--preset", "shapes", "--data-dir", str(shapes_dir), "--output-dir", str(tmp_path),
                               "--max-steps", "5", "--batch-size", "4", "--resume", *TINY_FLAGS)
    assert resumed.returncode == 0, resumed.stderr
    assert "steps 3 → 5" in resumed.stdout


@pytest.mark.skipif(not COCO_MINI.is_dir(), reason="../shared/coco-mini is not present")
def test_train_py_on_real_coco_files(tmp_path):
    result = train_in_process("--data-dir", str(COCO_MINI), "--output-dir", str(tmp_path), "--max-steps", "2",
                              "--batch-size", "4", "--no-sample-every-epoch", *TINY_FLAGS)
    assert result.returncode == 0, result.stderr
    assert "80 train / 79 val images" in result.stdout
    GenerativeMultimodalModel.from_pretrained(tmp_path / "latest")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data-dir", "{tmp}/nowhere"], "not found; expected COCO"),
        (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (["--lr", "-1"], "--lr must be above 0, got -1.0"),
        (["--ema-decay", "1"], "--ema-decay must be in [0, 1), got 1.0"),
        (["--precision", "fp8"], "argument --precision: invalid choice: 'fp8'"),
        (["--batch-szie", "4"], "(did you mean --batch-size?)"),
        (["--batch", "4"], "unrecognized argument --batch"),
        (["--image-size", "100"], "7·2^k"),
        (["--output-dir", "{tmp}/a_file"], "is a file"),
        (["--resume", "--output-dir", "{tmp}/empty", "--data-dir", "{shapes}"], "no resumable checkpoint"),
        (["--sampler-of-doom", "1"], "unrecognized arguments"),
        (["--log-every", "10"], "--log-every sets how often --report-to logs"),
        (["--report-to", "mlflow"], "argument --report-to: invalid choice: 'mlflow'"),
        (["--output-dir", "{tmp}/run", "--data-dir", "{shapes}"], "already holds a run"),
    ],
)
def test_bad_input_gets_one_line_and_exit_code_2(args, message, tmp_path, shapes_dir):
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "run" / "latest").mkdir(parents=True)
    args = [a.format(tmp=tmp_path, shapes=shapes_dir) for a in args]
    result = train_in_process(*TINY_FLAGS, *args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_missing_coco_suggests_the_shapes_preset(tmp_path):
    result = train_in_process(*TINY_FLAGS, cwd=tmp_path)
    assert result.returncode == 2
    assert "--preset shapes" in result.stderr and "train2017" in result.stderr


def test_a_sample_sheet_draws_a_caption_its_font_lacks_without_a_warning(tiny_model, tmp_path, monkeypatch):
    """An untrained caption decoder writes any of BERT's words; matplotlib's fonts lack CJK."""
    monkeypatch.setattr(tiny_model, "generate_text_from_image", lambda images: ["二 ぶ 세"] * len(images))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        captions = write_sample_sheet(tiny_model, ["a red circle"], torch.zeros(1, 3, 28, 28), tmp_path / "sheet.png")
    assert captions == ["二 ぶ 세"] and (tmp_path / "sheet.png").stat().st_size > 0
    assert not [w for w in caught if "missing from font" in str(w.message)]


def test_an_unconditional_models_sample_sheet_names_no_prompt(tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(samples, "sample_sheet", lambda *args: drawn.update(titles=args[1], captions=args[3], rows=args[5]))
    model = GenerativeMultimodalModel(tiny_config().without_captions())
    assert write_sample_sheet(model, ["a red circle"], torch.zeros(1, 3, 28, 28), tmp_path / "sheet.png") == [""]
    assert drawn == {"titles": [""], "captions": [""], "rows": ("no prompt", "validation images")}


def test_the_caption_decoder_writes_the_words_of_its_training_captions(shapes_dir, tmp_path):
    """--caption-vocabulary captions (the default): the decoder's vocabulary is the training
    captions' wordpieces and the special tokens, it writes nothing else, and the checkpoint keeps
    it; a fine-tune adds its captions' words to its base's; `all` writes every word."""
    trainer = tiny_trainer(shapes_dir, tmp_path / "run", epochs=1)
    tokenizer = trainer.model.tokenizer
    specials = {tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id}
    expected = set(caption_words(trainer.model, trainer.train_set)) | specials
    assert 10 < len(expected) < 40
    trainer.run()
    model = GenerativeMultimodalModel.from_pretrained(tmp_path / "run" / "latest")
    assert set(model.caption_decoder.lm.words.tolist()) == expected
    captions = model.caption_decoder.generate(torch.randn(4, 32, 7, 7), max_new_tokens=8, do_sample=True)
    assert set(captions.flatten().tolist()) <= expected

    lm = model.caption_decoder.lm
    lm.set_vocabulary([tokenizer.convert_tokens_to_ids("orange")])
    model.save_pretrained(tmp_path / "narrow")
    tuned = tiny_trainer(shapes_dir, tmp_path / "tuned", init_from=str(tmp_path / "narrow"))
    assert set(tuned.model.caption_decoder.lm.words.tolist()) == expected | {tokenizer.convert_tokens_to_ids("orange")}

    every = tiny_trainer(shapes_dir, tmp_path / "every", caption_vocabulary="all").model.caption_decoder.lm
    assert not every.restricted and len(every.words) == len(tokenizer)


@pytest.mark.skipif(not COCO_MINI.is_dir(), reason="needs ../shared/coco-mini")
def test_caption_words_are_the_ids_of_the_whole_captions(tmp_path):
    """Tokenising each distinct word once gives the ids tokenising every caption gives."""
    model = GenerativeMultimodalModel(tiny_config())
    train_set = open_split(COCO_MINI, "train", 28)
    captions = [caption for captions in train_set.references.values() for caption in captions]
    whole = {token for ids in model.tokenizer(captions)["input_ids"] for token in ids}
    assert caption_words(model, train_set) == sorted(whole) and len(whole) > 500
