"""evaluate.py and the evaluation it runs: scoring a perfect model, the command line on a tiny
checkpoint (shapes and COCO), and refusing bad input in one line."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import OneHotJudge, run_in_process, script_main, tiny_config
from multimodal import GenerativeMultimodalModel, presets
from multimodal.data import (
    CocoCaptionDataset,
    ShapeSpec,
    all_combinations,
    canonical_caption,
    generate_shapes_dataset,
    image_transform,
    parse_caption_attributes,
    read_shape_attributes,
    render_shape,
    to_pil,
)
from multimodal.evaluation import (
    check_targets,
    evaluate_shapes,
    format_table,
    format_targets,
    score_shape_images,
)

SHAPES_TARGETS = presets.get("shapes").targets

REPO = Path(__file__).resolve().parents[1]
COCO_MINI = REPO.parent / "shared" / "coco-mini"
COMBINATIONS = all_combinations()
ATTRIBUTES = ("shape", "color", "size", "position")
ACCURACIES = [f"{part}/{name}" for part in ("caption", "t2i", "t2i_fast") for name in (*ATTRIBUTES, "all")]
SHAPES_KEYS = {"images", "prompts", *ACCURACIES} | {
    f"retrieval/{direction}_R@{k}" for direction in ("i2t", "t2i") for k in (1, 5)
} | {f"retrieval_reranked/{direction}_R@1" for direction in ("i2t", "t2i")} | {
    f"seconds/{part}" for part in ("retrieval", "retrieval_reranked", "caption", "t2i", "t2i_fast", "total")
}
COCO_KEYS = {"images", "captions", "prompts", "caption/num_beams", "caption/BLEU-4", "caption/CIDEr-D",
             "caption/tokenization"} | {
    f"retrieval/{direction}_R@{k}" for direction in ("i2t", "t2i") for k in (1, 5, 10)
} | {f"t2i/{name}" for name in ("FD_effnet", "KID_effnet", "KID_effnet_std", "KID_effnet_subset",
                                "R-precision_own_encoders", "R-precision_candidates", "CLIP-score_own_encoders")} | {
    f"seconds/{part}" for part in ("retrieval", "caption", "real_features", "t2i", "t2i_features", "t2i_embed",
                                   "FD_effnet", "KID_effnet", "R-precision", "CLIP-score", "total")}


def run_evaluate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "evaluate.py"), *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def assert_printed_and_consistent(metrics: dict, stdout: str, ks: tuple[int, ...]) -> None:
    """The metrics written are the table printed; recall grows with K within [0, 1]; the parts'
    seconds add up to at most the total."""
    assert format_table(metrics) in stdout
    for direction in ("i2t", "t2i"):
        recalls = [metrics[f"retrieval/{direction}_R@{k}"] for k in ks]
        assert 0.0 <= recalls[0] and recalls == sorted(recalls) and recalls[-1] <= 1.0, (direction, recalls)
    parts = sum(value for name, value in metrics.items() if name.startswith("seconds/") and name != "seconds/total")
    assert 0.0 < parts <= metrics["seconds/total"]


# -- scoring, without a model ---------------------------------------------------------------
def test_pictures_drawn_right_score_one_and_wrong_ones_do_not():
    rng = np.random.default_rng(0)
    images = [render_shape(spec, 56, rng) for spec in COMBINATIONS]
    assert set(score_shape_images(images, COMBINATIONS).values()) == {1.0}
    shifted = score_shape_images(images, COMBINATIONS[1:] + COMBINATIONS[:1])
    assert shifted["all"] == 0.0 and shifted["shape"] > 0.9  # neighbours differ in position (or more)


class Oracle(OneHotJudge):
    """A perfect model: it reads pictures and captions exactly, so every metric must be 1."""

    config = SimpleNamespace(image_size=56)
    kinds = COMBINATIONS
    caption = staticmethod(canonical_caption)

    def _read(self, images: torch.Tensor) -> list[ShapeSpec]:
        return [ShapeSpec(**read_shape_attributes(to_pil(image))) for image in images]

    def _parse(self, text: str) -> ShapeSpec:
        return ShapeSpec(**parse_caption_attributes(text))

    def generate_image_from_text(self, texts: list[str], sampling=None, generator=None,
                                 use_diffusion=True) -> torch.Tensor:
        rng = np.random.default_rng(0)
        specs = [ShapeSpec(**parse_caption_attributes(text)) for text in texts]
        return torch.stack([image_transform(56)(render_shape(spec, 56, rng)) for spec in specs])


def test_evaluate_shapes_gives_a_perfect_model_full_marks(tmp_path):
    data = generate_shapes_dataset(tmp_path, num_train=1, num_val=12, image_size=56, progress=False)
    metrics = evaluate_shapes(Oracle(), CocoCaptionDataset(data, "val", 56), batch_size=5)
    assert metrics["images"] == 12 and metrics["prompts"] == len(COMBINATIONS)
    for name in SHAPES_KEYS - {"images", "prompts"}:
        assert metrics[name] == 1.0 or name.startswith("seconds/"), name
    assert all(check_targets(metrics, SHAPES_TARGETS).values())
    assert format_targets(metrics, SHAPES_TARGETS).endswith("8 of 8 targets met")


# -- the command line on a tiny checkpoint ---------------------------------------------------
@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """A training run folder as train.py leaves it: best/ with a trainer state naming its data."""
    root = tmp_path_factory.mktemp("evaluate")
    data = generate_shapes_dataset(root / "shapes", num_train=16, num_val=12, image_size=28, progress=False)
    torch.manual_seed(0)
    GenerativeMultimodalModel(tiny_config(image_size=28)).save_pretrained(root / "run" / "best")
    state = {"train_config": {"preset": "shapes", "data_dir": str(data)}}
    (root / "run" / "best" / "trainer_state.json").write_text(json.dumps(state))
    return root / "run"


def test_shapes_evaluation_writes_every_metric_next_to_the_checkpoint(run_folder):
    result = run_evaluate("--checkpoint", str(run_folder), "--limit", "10", "--steps", "2", "--batch-size", "4", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "%|" not in result.stderr  # --quiet: no progress bars
    results = json.loads((run_folder / "best" / "evaluation-limit-10.json").read_text())
    assert results["dataset"] == "shapes" and results["data_dir"] == str(run_folder.parent / "shapes")
    assert results["settings"]["precision"] == "auto" and results["settings"]["dtype"] == "float32"  # on the CPU
    metrics = results["metrics"]
    assert set(metrics) == SHAPES_KEYS
    assert metrics["images"] == metrics["prompts"] == 10
    for name in SHAPES_KEYS - {"images", "prompts"} - {k for k in SHAPES_KEYS if k.startswith("seconds/")}:
        assert 0.0 <= metrics[name] <= 1.0, name
    assert set(results["targets"]) == set(SHAPES_TARGETS)
    assert "t2i/all" in result.stdout and "targets met" in result.stdout
    assert_printed_and_consistent(metrics, result.stdout, (1, 5))


def test_a_full_evaluation_puts_its_table_in_the_model_card_and_a_quick_look_does_not(run_folder):
    card = run_folder / "best" / "README.md"
    evaluate = runpy.run_path(str(REPO / "evaluate.py"))["main"]  # in this process: the command line's own runs are above
    assert evaluate(["--checkpoint", str(run_folder), "--limit", "4", "--steps", "1"]) == 0
    assert card.is_file() and "## Evaluation" not in card.read_text()
    assert evaluate(["--checkpoint", str(run_folder), "--steps", "1"]) == 0
    text = card.read_text()
    assert "## Evaluation" in text and "the whole validation split" in text and "| retrieval/i2t_R@1 |" in text
    assert text.startswith("---\nlibrary_name: multimodal\n")
    # a measure on another data set goes to its own file and leaves the card as it was
    other = run_folder.parent / "elsewhere.json"
    assert evaluate(["--checkpoint", str(run_folder), "--steps", "1", "--data-dir", str(run_folder.parent / "shapes"),
                     "--output", str(other)]) == 0
    assert other.is_file() and card.read_text() == text


@pytest.mark.skipif(not COCO_MINI.is_dir(), reason=f"no COCO sample at {COCO_MINI}")
def test_coco_evaluation_scores_captions_and_retrieval(run_folder):
    result = run_in_process(script_main("evaluate.py"), "--checkpoint", str(run_folder / "best"), "--data-dir",
                            str(COCO_MINI), "--limit", "8", cwd=REPO)
    assert result.returncode == 0, result.stderr
    results = json.loads((run_folder / "best" / "evaluation-limit-8.json").read_text())
    metrics = results["metrics"]
    assert results["dataset"] == "coco" and set(metrics) == COCO_KEYS and results["targets"] == {}
    first = list(CocoCaptionDataset(COCO_MINI, "val").references.values())[:8]
    assert metrics["images"] == 8 and metrics["captions"] == sum(len(captions) for captions in first)
    assert_printed_and_consistent(metrics, result.stdout, (1, 5, 10))
    assert metrics["retrieval/t2i_R@10"] == 1.0  # 8 images: a caption ranks them all, its own among them
    assert 0.0 <= metrics["caption/BLEU-4"] <= 1.0 and 0.0 <= metrics["caption/CIDEr-D"] <= 10.0
    assert "targets met" not in result.stdout


@pytest.mark.parametrize("problem", ["checkpoint", "data"])
def test_missing_input_is_one_line_and_exit_code_2(run_folder, tmp_path, problem):
    checkpoint = tmp_path / "nowhere" if problem == "checkpoint" else run_folder
    result = run_evaluate("--checkpoint", str(checkpoint), "--data-dir", str(tmp_path / "no-data"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and str(tmp_path) in result.stderr
