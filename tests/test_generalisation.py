"""Generalisation sets: held-out shapes combinations and two-object scenes, their readers, and
evaluation of seen and unseen kinds apart."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import OneHotJudge, run_recording, tiny_config
from multimodal import GenerativeMultimodalModel, presets
from multimodal.config import TrainConfig
from multimodal.data import CaptionCollator, CocoCaptionDataset, image_transform, to_pil
from multimodal.data import scenes
from multimodal.data.builtin import ensure_builtin_dataset
from multimodal.data.hard_negatives import swapped_captions
from multimodal.data.scenes_reader import parse_scene_caption, read_scene
from multimodal.data.shapes import (
    COLORS,
    POSITIONS,
    SHAPES,
    SIZES,
    ShapeSpec,
    all_combinations,
    generate_shapes_dataset,
    is_heldout,
)
from multimodal.evaluation import (
    check_targets,
    evaluate_scenes,
    evaluate_shapes,
    format_seen_unseen,
)
from multimodal.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
LAYOUTS = scenes.all_layouts()


# -- held-out shapes combinations --------------------------------------------------------------
def test_a_fifth_of_the_combinations_is_held_out_and_every_value_and_pair_still_trains():
    combinations = all_combinations()
    trained = [spec for spec in combinations if not is_heldout(spec)]
    assert len(combinations) - len(trained) == 36
    values = {"shape": SHAPES, "color": COLORS, "size": SIZES, "position": POSITIONS}
    for one, other in itertools.combinations(values, 2):
        seen_pairs = {(getattr(spec, one), getattr(spec, other)) for spec in trained}
        assert seen_pairs == set(itertools.product(values[one], values[other])), (one, other)


def test_holdout_keeps_those_combinations_out_of_training_and_marks_validation(tmp_path):
    data = generate_shapes_dataset(tmp_path, num_train=300, num_val=180, image_size=28, progress=False, holdout=True)
    train, val = CocoCaptionDataset(data, "train", 28), CocoCaptionDataset(data, "val", 28)
    trained = {tuple(info["shape"].values()) for info in train.image_info.values()}
    assert len(trained) == 144 and not any(is_heldout_values(values) for values in trained)
    seen = [info["seen"] for info in val.image_info.values()]
    assert seen.count(False) == 36 and seen.count(True) == 144
    assert all(info["seen"] == (not is_heldout_values(tuple(info["shape"].values()))) for info in val.image_info.values())


def is_heldout_values(values: tuple[str, ...]) -> bool:
    return is_heldout(ShapeSpec(*values))


def test_the_standard_shapes_set_is_unchanged_by_the_holdout_option(tmp_path):
    data = generate_shapes_dataset(tmp_path, num_train=200, num_val=10, image_size=28, progress=False)
    train = CocoCaptionDataset(data, "train", 28)
    assert len({tuple(info["shape"].values()) for info in train.image_info.values()}) == 180
    assert not any("seen" in info for info in train.image_info.values())


def test_a_builtin_set_is_drawn_again_with_its_counts_when_its_options_change(tmp_path):
    generate_shapes_dataset(tmp_path, num_train=20, num_val=5, image_size=28, progress=False)
    ensure_builtin_dataset("shapes", tmp_path, 28)  # the same options: left as it is
    assert json.loads((tmp_path / "shapes.json").read_text())["holdout"] is False
    ensure_builtin_dataset("shapes-holdout", tmp_path, 28)
    params = json.loads((tmp_path / "shapes.json").read_text())
    assert params["holdout"] is True and (params["num_train"], params["num_val"]) == (20, 5)
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "notes.txt").write_text("someone's data")
    ensure_builtin_dataset("scenes", tmp_path / "own", 56)  # not a built-in set: left alone
    assert [path.name for path in (tmp_path / "own").iterdir()] == ["notes.txt"]


# -- the scenes set ---------------------------------------------------------------------------
def object_box(image: np.ndarray, color: str) -> tuple[float, float, float, float]:
    """Box (left, top, right, bottom) of the pixels of exactly this colour, as fractions."""
    mask = (image == np.array(scenes.COLORS[color])).all(axis=2)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    side = image.shape[0]
    return cols[0] / side, rows[0] / side, (cols[-1] + 1) / side, (rows[-1] + 1) / side


@pytest.mark.parametrize("index", range(0, 540, 23))
def test_a_scene_is_drawn_as_its_specification_says(index):
    spec = LAYOUTS[index]
    image = np.asarray(scenes.render_scene(spec, 56, np.random.default_rng(index)))
    assert image.shape == (56, 56, 3)
    colours = {tuple(pixel) for pixel in image.reshape(-1, 3)}
    assert colours == {(0, 0, 0), scenes.COLORS[spec.first.color], scenes.COLORS[spec.second.color]}
    boxes = []
    for thing, (cx, cy) in zip((spec.first, spec.second), scenes.PLACES[spec.arrangement]):
        left, top, right, bottom = object_box(image, thing.color)
        side = ((right - left) + (bottom - top)) / 2
        assert abs(side / scenes.OBJECT_SIDE - 1) <= 0.08 + 1.5 / (56 * scenes.OBJECT_SIDE)  # ±8%, ±1 px rounding
        centre = ((left + right) / 2, (top + bottom) / 2)
        assert abs(centre[0] - cx) <= 0.03 + 1 / 56 and abs(centre[1] - cy) <= 0.03 + 1 / 56
        # the colour is exact at the middle of its box (an apex-up triangle covers it too)
        assert tuple(image[int(56 * (top + bottom) / 2), int(56 * (left + right) / 2)]) == scenes.COLORS[thing.color]
        boxes.append((left, top, right, bottom))
    (l1, t1, r1, b1), (l2, t2, r2, b2) = boxes
    assert r1 <= l2 or b1 <= t2  # the first box ends before the second begins: no overlap


def test_layouts_pairs_and_held_out_pairs_are_as_documented():
    assert len(LAYOUTS) == len(set(LAYOUTS)) == 540
    pairs = {frozenset((spec.first, spec.second)) for spec in LAYOUTS}
    assert len(pairs) == 135
    heldout = scenes.heldout_pairs()
    assert len(heldout) == 20 and heldout <= pairs and heldout == scenes.heldout_pairs()  # deterministic
    partners = Counter(thing for pair in pairs - heldout for thing in pair)
    assert set(partners) == set(scenes.OBJECTS) and min(partners.values()) >= 11


def test_held_out_pairs_never_appear_together_in_a_training_caption(tmp_path):
    data = scenes.generate_scenes_dataset(tmp_path, num_train=500, num_val=540, image_size=56, progress=False)
    train, val = CocoCaptionDataset(data, "train", 56), CocoCaptionDataset(data, "val", 56)
    heldout = scenes.heldout_pairs()
    for caption in train.captions:
        parsed = parse_scene_caption(caption)
        assert parsed is not None and frozenset((parsed.first, parsed.second)) not in heldout, caption
    seen = [info["seen"] for info in val.image_info.values()]
    assert seen.count(False) == 80 and seen.count(True) == 460  # every layout once: 20 pairs × 2 orders × 2


@pytest.mark.parametrize("index", range(0, 540, 7))
def test_the_reader_and_the_parser_invert_the_renderer_and_every_caption_form(index):
    spec = LAYOUTS[index]
    assert read_scene(scenes.render_scene(spec, 56, np.random.default_rng(index))) == spec
    for caption in scenes.captions_for(spec):
        assert parse_scene_caption(caption) == spec, caption


@pytest.mark.parametrize("index", range(0, 540, 11))
def test_hard_negatives_swap_the_objects_and_the_colours_in_every_caption_form(index):
    spec = LAYOUTS[index]
    mirror = scenes.SceneSpec(spec.second, spec.first, spec.arrangement)
    recoloured = scenes.SceneSpec(
        scenes.SceneObject(spec.first.shape, spec.second.color), scenes.SceneObject(spec.second.shape, spec.first.color),
        spec.arrangement,
    )
    for caption in scenes.captions_for(spec):
        found = [parse_scene_caption(text) for text in swapped_captions(caption)]
        # Two objects of one shape: swapping their colours is the mirror, given once.
        assert found == ([mirror] if spec.first.shape == spec.second.shape else [mirror, recoloured])
    assert swapped_captions("a large red circle at the top") == []  # one object: nothing to swap
    assert swapped_captions("a red circle above a red square") == []


def test_the_collator_pads_missing_negatives_and_marks_them_invalid():
    def tokenize(texts):
        return {"input_ids": torch.zeros(len(texts), 2), "attention_mask": torch.ones(len(texts), 2)}

    collate = CaptionCollator(tokenize, swapped_captions, 2)
    items = [{"image": torch.zeros(3, 2, 2), "image_id": i, "caption": caption} for i, caption in enumerate([
        "a red circle above a blue square", "a red circle above a blue circle", "a large red circle at the top",
    ])]
    batch = collate(items)
    assert batch["negative_captions"] == [
        "a blue square above a red circle", "a blue circle above a red square",
        "a blue circle above a red circle", "a red circle above a blue circle",  # one swap, then the caption
        "a large red circle at the top", "a large red circle at the top",  # none: the caption twice
    ]
    assert batch["negative_valid"].tolist() == [[True, True], [True, False], [False, False]]
    assert batch["negative_input_ids"].shape[0] == 6


def test_training_with_hard_negatives_ranks_them_in_the_contrastive_loss(tmp_path):
    data = scenes.generate_scenes_dataset(tmp_path / "scenes", num_train=16, num_val=8, image_size=28, progress=False)

    def first_step(hard_negatives: bool) -> tuple[dict, Trainer]:
        torch.manual_seed(0)
        trainer = Trainer(tiny_config(freeze_bert=True, image_size=28), TrainConfig(
            preset="scenes", data_dir=str(data), output_dir=str(tmp_path / str(hard_negatives)), epochs=1,
            batch_size=8, max_steps=1, num_workers=0, sample_every_epoch=False, hard_negatives=hard_negatives,
        ))
        return run_recording(trainer)[0], trainer

    plain, _ = first_step(False)
    with_negatives, trainer = first_step(True)
    # The same batch, two more columns per image: the loss can only grow.
    assert with_negatives["cont"] > plain["cont"] and with_negatives["diff"] == plain["diff"]
    mirrored = [swapped_captions(caption)[0] for caption in trainer.train_set.captions]
    assert any(caption in trainer.text_cache.store for caption in mirrored)  # BERT's states cached for them too


@pytest.mark.parametrize("caption", [
    "a red circle on the left",                                          # one object
    "a red circle on the left and a blue square on the left",            # both on the left
    "a red circle to the left of a blue square on the left",             # contradicts itself
    "on the left a red circle and a blue square",                        # no relation after the first
    "a red blue circle to the left of a green square",                   # two colours for one object
    "a red circle above a blue square to the right",                     # two arrangements
])
def test_the_parser_refuses_captions_that_do_not_commit_to_one_scene(caption):
    assert parse_scene_caption(caption) is None


def test_the_reader_needs_two_objects():
    spec = LAYOUTS[0]
    image = np.asarray(scenes.render_scene(spec, 56, np.random.default_rng(0))).copy()
    image[(image == np.array(scenes.COLORS[spec.second.color])).all(axis=2)] = 0
    assert read_scene(image) is None


# -- evaluation of seen and unseen kinds apart ------------------------------------------------
class SceneOracle(OneHotJudge):
    """A perfect scenes model: it reads pictures and captions exactly, so every metric is 1."""

    config = SimpleNamespace(image_size=56)
    kinds = LAYOUTS
    caption = staticmethod(scenes.canonical_caption)

    def _read(self, images: torch.Tensor) -> list[scenes.SceneSpec]:
        return [read_scene(to_pil(image)) for image in images]

    def _parse(self, text: str) -> scenes.SceneSpec:
        return parse_scene_caption(text)

    def generate_image_from_text(self, texts, sampling=None, generator=None, use_diffusion=True):
        rng = np.random.default_rng(0)
        specs = [parse_scene_caption(text) for text in texts]
        return torch.stack([image_transform(56)(scenes.render_scene(spec, 56, rng)) for spec in specs])


def test_evaluate_scenes_gives_a_perfect_model_full_marks_seen_and_unseen(tmp_path):
    data = scenes.generate_scenes_dataset(tmp_path, num_train=1, num_val=540, image_size=56, progress=False)
    metrics = evaluate_scenes(SceneOracle(), CocoCaptionDataset(data, "val", 56), batch_size=64, limit=60)
    assert metrics["images"] == metrics["prompts"] == 60
    for group in ("", "seen/", "unseen/"):  # the first 60 layouts hold some of both kinds
        for name in ("t2i/both", "t2i_fast/both", "caption/both", "retrieval/i2t_R@1", "retrieval/t2i_R@1",
                     "retrieval_reranked/i2t_R@1", "retrieval_reranked/t2i_R@1"):
            assert metrics[f"{group}{name}"] == 1.0, f"{group}{name}"
    assert all(check_targets(metrics, presets.get("scenes").targets).values())
    table = format_seen_unseen(metrics)
    assert table.splitlines()[0].split() == ["metric", "all", "seen", "unseen"] and "t2i/both" in table


class WrongOnUnseen(SceneOracle):
    """Right on pairs it trained on, swaps the colours of pairs it never saw."""

    heldout = scenes.heldout_pairs()

    def generate_image_from_text(self, texts, sampling=None, generator=None, use_diffusion=True):
        rng = np.random.default_rng(0)
        specs = []
        for spec in (parse_scene_caption(text) for text in texts):
            if scenes.is_heldout(spec, self.heldout):
                spec = scenes.SceneSpec(scenes.SceneObject(spec.first.shape, spec.second.color),
                                        scenes.SceneObject(spec.second.shape, spec.first.color), spec.arrangement)
            specs.append(spec)
        return torch.stack([image_transform(56)(scenes.render_scene(spec, 56, rng)) for spec in specs])


def test_scene_evaluation_tells_unseen_pairs_apart(tmp_path):
    data = scenes.generate_scenes_dataset(tmp_path, num_train=1, num_val=10, image_size=56, progress=False)
    metrics = evaluate_scenes(WrongOnUnseen(), CocoCaptionDataset(data, "val", 56), batch_size=64, limit=100)
    unseen = sum(scenes.is_heldout(spec) for spec in LAYOUTS[:100])
    assert 0 < unseen < 100
    assert metrics["seen/t2i/both"] == 1.0 and metrics["unseen/t2i/both"] == 0.0
    assert metrics["t2i/both"] == pytest.approx(1 - unseen / 100)


class MirrorBlind(SceneOracle):
    """Embeds a scene and its mirror (the objects' sides swapped) alike, as a bag of words
    would; its latent and its caption likelihood still tell them apart."""

    @staticmethod
    def _unordered(spec: scenes.SceneSpec) -> scenes.SceneSpec:
        return min(spec, scenes.SceneSpec(spec.second, spec.first, spec.arrangement), key=LAYOUTS.index)

    def encode_image(self, images):
        return self._one_hot([self._unordered(spec) for spec in self._read(images)])

    def encode_text(self, texts):
        return self._one_hot([self._unordered(parse_scene_caption(text)) for text in texts])

    def image_encoder(self, images):
        return self._one_hot(self._read(images)), self.encode_image(images)

    def caption_log_likelihood(self, latents, texts):
        return (latents * self._one_hot([parse_scene_caption(text) for text in texts])).sum(1) - 1


def test_reranking_by_the_caption_decoder_tells_mirror_captions_apart(tmp_path):
    data = scenes.generate_scenes_dataset(tmp_path, num_train=1, num_val=540, image_size=56, progress=False)
    metrics = evaluate_scenes(MirrorBlind(), CocoCaptionDataset(data, "val", 56), batch_size=64, limit=60)
    assert metrics["retrieval/i2t_R@1"] == 0.0  # an image's caption ties with its mirror, and ties count against
    assert metrics["retrieval/t2i_R@1"] < 1.0
    assert metrics["retrieval_reranked/i2t_R@1"] == 1.0 and metrics["retrieval_reranked/t2i_R@1"] == 1.0


def test_shapes_holdout_evaluation_on_a_tiny_checkpoint_prints_both_columns(tmp_path):
    data = generate_shapes_dataset(tmp_path / "data", num_train=8, num_val=180, image_size=28, progress=False,
                                   holdout=True)
    torch.manual_seed(0)
    run = tmp_path / "run"
    GenerativeMultimodalModel(tiny_config(image_size=28)).save_pretrained(run / "best")
    state = {"train_config": {"preset": "shapes-holdout", "data_dir": str(data)}}
    (run / "best" / "trainer_state.json").write_text(json.dumps(state))
    result = subprocess.run(
        [sys.executable, str(REPO / "evaluate.py"), "--checkpoint", str(run), "--limit", "20", "--steps", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((run / "best" / "evaluation-limit-20.json").read_text())["metrics"]
    for name in ("t2i/all", "caption/all", "retrieval/i2t_R@1", "retrieval/t2i_R@1"):
        assert 0 <= metrics[f"seen/{name}"] <= 1 and 0 <= metrics[f"unseen/{name}"] <= 1, name
    header = next(line for line in result.stdout.splitlines() if line.split()[:4] == ["metric", "all", "seen", "unseen"])
    assert header
    targets = json.loads((run / "best" / "evaluation-limit-20.json").read_text())["targets"]
    assert set(targets) == set(presets.get("shapes-holdout").targets)


def test_shapes_evaluation_splits_seen_and_unseen(tmp_path):
    from test_evaluate_cli import Oracle

    data = generate_shapes_dataset(tmp_path, num_train=1, num_val=180, image_size=56, progress=False, holdout=True)
    metrics = evaluate_shapes(Oracle(), CocoCaptionDataset(data, "val", 56), batch_size=64)
    for group in ("seen/", "unseen/"):
        for name in ("t2i/all", "caption/all", "t2i_fast/all", "retrieval/i2t_R@1", "retrieval/t2i_R@1"):
            assert metrics[f"{group}{name}"] == 1.0, f"{group}{name}"
