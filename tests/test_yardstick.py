"""The COCO yardstick: FD and KID against their closed forms and torchmetrics, R-precision and
CLIP-score, PTB-tokenised caption scores, 1k retrieval folds, the FID weights check, Karpathy's
split and its overlap with COCO's train2017, and evaluate.py measuring text→image on photographs."""

from __future__ import annotations

import json
import runpy
import shutil
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_config
from multimodal import GenerativeMultimodalModel
from multimodal.data import open_split
from multimodal.data.karpathy import coco_overlap
from multimodal.data.layouts import detect_layout
from multimodal.errors import CheckpointError, DatasetLayoutError
from multimodal.evaluation import format_table
from multimodal.evaluation.features import FIDInception, inception_features
from multimodal.metrics import (
    TooFewSamplesError,
    caption_scores,
    frechet_distance,
    kernel_inception_distance,
    mean_cosine,
    ptb_available,
    ptb_tokenize,
    r_precision,
    retrieval_recall,
    retrieval_recall_folds,
)

REPO = Path(__file__).resolve().parents[1]


def with_moments(n: int, mean: np.ndarray, cov: np.ndarray, seed: int) -> np.ndarray:
    """n samples whose sample mean and unbiased covariance are exactly `mean` and `cov`."""
    x = np.random.default_rng(seed).standard_normal((n, len(mean)))
    x -= x.mean(axis=0)
    x = x @ np.linalg.inv(np.linalg.cholesky(np.cov(x, rowvar=False))).T  # whitened: covariance I
    return x @ np.linalg.cholesky(cov).T + mean


# -- FD and KID --------------------------------------------------------------------------------
def test_frechet_distance_is_zero_on_itself_and_the_closed_form_between_gaussians():
    rng = np.random.default_rng(0)
    features = rng.standard_normal((64, 8))
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(torch.from_numpy(features).float(), features) == pytest.approx(0.0, abs=1e-5)
    # Diagonal covariances: ‖μa − μb‖² + Σ (√a_i − √b_i)².
    var_a, var_b = rng.uniform(0.5, 2.0, 8), rng.uniform(0.5, 2.0, 8)
    mean_a, mean_b = rng.standard_normal(8), rng.standard_normal(8)
    a, b = with_moments(50, mean_a, np.diag(var_a), 1), with_moments(70, mean_b, np.diag(var_b), 2)
    closed = np.sum((mean_a - mean_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    assert frechet_distance(a, b) == pytest.approx(closed, rel=1e-9)


class Passthrough(torch.nn.Module):
    """A 'feature network' for torchmetrics that hands the features it is given back."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.dim() == 2 else torch.zeros(len(x), self.dims, dtype=torch.float64)  # its probe image


def test_fd_and_kid_agree_with_torchmetrics_on_the_same_features():
    fid_module = pytest.importorskip("torchmetrics.image.fid")
    kid_module = pytest.importorskip("torchmetrics.image.kid")
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(300, 24, generator=generator, dtype=torch.float64)
    fake = torch.randn(260, 24, generator=generator, dtype=torch.float64) * 1.2 + 0.3
    fid = fid_module.FrechetInceptionDistance(feature=Passthrough(24))
    kid = kid_module.KernelInceptionDistance(feature=Passthrough(24), subsets=7, subset_size=90)
    for metric in (fid, kid):
        metric.update(real, real=True)
        metric.update(fake, real=False)
    assert frechet_distance(real, fake) == pytest.approx(fid.compute().item(), rel=1e-6)
    torch.manual_seed(5)
    theirs = [value.item() for value in kid.compute()]
    assert kernel_inception_distance(real, fake, 7, 90, seed=5) == pytest.approx(theirs, rel=1e-6)
    # the same distribution scores near 0, a shifted one well above
    same, _ = kernel_inception_distance(real[:150], real[150:], 10, 100)
    assert abs(same) < 0.1 * kernel_inception_distance(real, fake, 10, 100)[0]


@pytest.mark.parametrize("case, words", [
    ("one image", "needs at least 2"),
    ("features outnumber images", "ill-conditioned"),
    ("as many features as images", "ill-conditioned"),
    ("KID subset larger than a set", "KID subset of 40"),
])
def test_too_few_images_are_said_not_printed(case, words):
    rng = np.random.default_rng(0)
    sizes = {"one image": (1, 4), "features outnumber images": (10, 16), "as many features as images": (16, 16),
             "KID subset larger than a set": (30, 4)}[case]
    a, b = rng.standard_normal(sizes), rng.standard_normal((50, sizes[1]))
    with pytest.raises(TooFewSamplesError, match=words) as error:
        if case.startswith("KID"):
            kernel_inception_distance(a, b, 3, 40, names=("the real images", "the pictures drawn"))
        else:
            frechet_distance(a, b, names=("the real images", "the pictures drawn"))
    assert "the real images" in str(error.value) and "\n" not in str(error.value)


# -- R-precision, CLIP-score, folds, PTB ------------------------------------------------------------
def test_r_precision_ranks_each_prompt_among_captions_of_other_images():
    texts = torch.eye(12, dtype=torch.float64)  # 12 captions, 3 per image, orthogonal
    owners = [t // 3 for t in range(12)]
    prompts = [0, 3, 6, 9]
    assert r_precision(texts[prompts], texts, prompts, owners, negatives=9) == 1.0
    wrong = [3, 6, 9, 0]  # each picture shows another image's caption
    assert r_precision(texts[wrong], texts, prompts, owners, negatives=9) == 0.0
    collapsed = torch.ones(4, 12, dtype=torch.float64)  # every caption ties: a tie counts against
    assert r_precision(collapsed, texts, prompts, owners, negatives=9) == 0.0
    with pytest.raises(TooFewSamplesError, match="only 9"):
        r_precision(texts[prompts], texts, prompts, owners, negatives=99)
    assert mean_cosine(texts[prompts] * 3, texts[prompts]) == pytest.approx(1.0)
    assert mean_cosine(texts[wrong], texts[prompts]) == pytest.approx(0.0)


def test_retrieval_over_folds_is_each_fold_with_its_own_captions_averaged():
    generator = torch.Generator().manual_seed(0)
    images, texts = torch.randn(5, 8, generator=generator), torch.randn(10, 8, generator=generator)
    positives = [[2 * i, 2 * i + 1] for i in range(5)]
    folds = retrieval_recall_folds(images, texts, positives, fold_size=2, ks=(1,))  # the fifth image left out
    first = retrieval_recall(images[:2], texts[:4], [[0, 1], [2, 3]], ks=(1,))
    second = retrieval_recall(images[2:4], texts[4:8], [[0, 1], [2, 3]], ks=(1,))
    assert folds == pytest.approx({name: (first[name] + second[name]) / 2 for name in first})


@pytest.mark.skipif(not ptb_available(), reason="the PTB tokeniser needs Java")
def test_captions_are_ptb_tokenised_as_the_coco_evaluation_does():
    assert ptb_tokenize(["A man, riding a horse.", "", "Two dogs' toys!"]) == [
        "a man riding a horse", "", "two dogs toys"]
    references = {1: ["A dog runs on the beach.", "a dog running along the sea"],
                  2: ["Two cats sleep on a sofa.", "cats asleep on the couch"]}
    scores = caption_scores(references, {key: refs[0] for key, refs in references.items()}, ptb=True)
    assert scores["BLEU-4"] == pytest.approx(1.0, abs=1e-6) and scores["CIDEr"] > 0


@pytest.mark.parametrize("java", ["absent", "failing"])
def test_without_a_working_java_captions_are_scored_java_free_and_labelled_so(monkeypatch, java):
    from multimodal import metrics
    from multimodal.evaluation import drivers

    if java == "absent":
        monkeypatch.setattr(metrics.shutil, "which", lambda name: None)
    else:
        monkeypatch.setattr(drivers, "ptb_available", lambda: True)
        def java_fails(command, **options):
            raise metrics.subprocess.CalledProcessError(1, command)

        monkeypatch.setattr(metrics.subprocess, "run", java_fails)
    references = {1: ["A dog runs on the beach."], 2: ["Two cats sleep on a sofa."]}
    with pytest.warns(UserWarning, match="Java-free") if java == "failing" else nullcontext():
        scores = drivers._caption_metrics(references, {1: "a dog runs on the beach", 2: "two cats"})
    assert scores["caption/tokenization"] == "Java-free (no Java: not comparable with papers)"
    assert scores["caption/BLEU-4"] > 0


# -- the FID network's weights -------------------------------------------------------------------
@pytest.fixture(scope="module")
def fid_state(tmp_path_factory) -> Path:
    """A file in the FID network's layout (random weights, as pytorch-fid's file but untrained)."""
    torch.manual_seed(0)
    weights = {name: tensor for name, tensor in FIDInception().net.state_dict().items()
               if not name.endswith("num_batches_tracked")}  # as the 2015 file: no batch counters
    path = tmp_path_factory.mktemp("fid") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(weights, path)
    return path


def test_the_fid_network_reads_its_weights_file_and_gives_2048_features(fid_state):
    network = inception_features(fid_state)
    assert network.fd_name == "FID" and network.kid_name == "KID"
    assert network.input_size == 299
    network.input_size = 75  # the smallest the network takes: the same features, a tenth of the CPU time
    features = network.features(torch.rand(2, 3, 28, 28) * 2 - 1)
    assert features.shape == (2, 2048) and features.dtype == torch.float64


def bad_fid_file(tmp_path: Path, fid_state: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.pth"
    if kind == "text":
        path.write_text("not weights")
    elif kind == "another network":
        torch.save(GenerativeMultimodalModel(tiny_config()).image_encoder.state_dict(), path)
    elif kind == "ImageNet Inception":  # torchvision's 1000-class head: another network's features
        weights = torch.load(fid_state, weights_only=True)
        weights["fc.weight"], weights["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
        torch.save(weights, path)
    elif kind == "a list":
        torch.save([torch.zeros(3)], path)
    return path  # "missing": never written


@pytest.fixture(scope="module")
def evaluate():
    return runpy.run_path(str(REPO / "evaluate.py"))["main"]


@pytest.mark.parametrize("kind, words", [
    ("text", "cannot be read"), ("another network", "lacks"), ("ImageNet Inception", "fc.weight has shape (1000"),
    ("a list", "holds a list"), ("missing", "not found"),
])
def test_a_file_that_is_not_the_fid_network_is_refused_in_one_line(
    evaluate, karpathy_run, fid_state, tmp_path, capsys, kind, words
):
    path = bad_fid_file(tmp_path, fid_state, kind)
    with pytest.raises(CheckpointError, match="FID Inception"):
        inception_features(path)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        evaluate(["--checkpoint", str(karpathy_run), "--fid-weights", str(path)])
    stderr = capsys.readouterr().err
    assert exit_.value.code == 2 and len(stderr.strip().splitlines()) == 1
    assert f"--fid-weights {path}" in stderr and words in stderr and "Traceback" not in stderr


# -- Karpathy's split ------------------------------------------------------------------------------
SPLIT_SIZES = {"train": 2, "restval": 1, "val": 2, "test": 4}


def write_karpathy(root: Path) -> Path:
    """Karpathy's file for 9 images in COCO's 2014 folders, but one test image only under its
    2017 name, and COCO 2017 annotations for the training images (the coco layout's train split)."""
    rng = np.random.default_rng(0)
    entries, cocoid = [], 1
    for split, count in SPLIT_SIZES.items():
        for _ in range(count):
            folder = "train2014" if split == "train" else "val2014"
            name = f"COCO_{folder}_{cocoid:012d}.jpg"
            where = root / (folder if cocoid != 9 else "val2017")
            where.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(where / (name if cocoid != 9 else f"{cocoid:012d}.jpg"))
            sentences = [{"raw": f"A photo of thing {cocoid}."}, {"raw": f"thing number {cocoid} in a room"}]
            entries.append({"filepath": folder, "filename": name, "cocoid": cocoid, "split": split,
                            "sentences": sentences})
            cocoid += 1
    (root / "dataset_coco.json").write_text(json.dumps({"images": entries, "dataset": "coco"}))
    return root


@pytest.fixture(scope="module")
def karpathy_dir(tmp_path_factory) -> Path:
    return write_karpathy(tmp_path_factory.mktemp("karpathy"))


@pytest.fixture(scope="module")
def coco_2017(tmp_path_factory, karpathy_dir) -> Path:
    """COCO 2017's layout whose train split holds two of Karpathy's test images (ids 6 and 7), as
    train2017 holds most of them."""
    root = tmp_path_factory.mktemp("coco2017")
    for split, ids in (("train", (1, 6, 7)), ("val", (3, 4))):
        (root / f"{split}2017").mkdir()
        for image_id in ids:
            source = next(karpathy_dir.glob(f"*/*{image_id:012d}.jpg"))
            shutil.copy(source, root / f"{split}2017" / f"{image_id:012d}.jpg")
        images = [{"id": i, "file_name": f"{i:012d}.jpg"} for i in ids]
        captions = [{"id": i, "image_id": i, "caption": f"thing {i}"} for i in ids]
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"captions_{split}2017.json").write_text(
            json.dumps({"images": images, "annotations": captions}))
    return root


@pytest.fixture(scope="module")
def karpathy_run(tmp_path_factory, coco_2017) -> Path:
    """A tiny checkpoint whose trainer state says it trained on COCO 2017's layout."""
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("run") / "best"
    GenerativeMultimodalModel(tiny_config()).save_pretrained(directory)
    state = {"train_config": {"preset": "coco", "data_dir": str(coco_2017), "data_format": "coco"}}
    (directory / "trainer_state.json").write_text(json.dumps(state))
    return directory


def test_karpathy_layout_trains_on_train_and_restval_and_measures_its_test_split(karpathy_dir, coco_2017):
    assert detect_layout(karpathy_dir) == "karpathy"
    splits = {split: open_split(karpathy_dir, split, 28, data_format="karpathy") for split in ("train", "val", "test")}
    assert {split: len(data) for split, data in splits.items()} == {"train": 3, "val": 2, "test": 4}
    test = splits["test"]
    assert list(test.references) == [6, 7, 8, 9]  # COCO ids, the last one found under its 2017 name
    assert test.references[9] == ["A photo of thing 9.", "thing number 9 in a room"]
    assert test[3]["image"].shape == (3, 28, 28)
    # Beside COCO 2017's annotations the folder is COCO unless karpathy is asked for.
    shutil.copy(karpathy_dir / "dataset_coco.json", coco_2017 / "dataset_coco.json")
    try:
        assert detect_layout(coco_2017) == "coco"
    finally:
        (coco_2017 / "dataset_coco.json").unlink()
    assert coco_overlap([6, 7, 8, 9], karpathy_dir, "karpathy", coco_2017, "coco") == 2
    assert coco_overlap([6, 7, 8, 9], karpathy_dir, "karpathy", karpathy_dir, "auto") is None  # disjoint splits


@pytest.mark.parametrize("content, words", [
    ("{not json", "is not JSON"),
    ('{"dataset": "coco"}', "no list of images"),
    ('{"images": [{"filename": "a.jpg", "cocoid": 1, "split": "holdout", "sentences": []}]}', "has split"),
    ('{"images": [{"filename": "a.jpg", "cocoid": "1", "split": "test", "sentences": []}]}', "integer cocoid"),
    ('{"images": [{"filename": "a.jpg", "cocoid": 1, "split": "test", "sentences": ["a cat"]}]}', "raw text"),
    ('{"images": []}', "no captioned image of the train split"),
])
def test_a_file_that_is_not_karpathys_split_is_refused_in_one_line(tmp_path, content, words):
    (tmp_path / "dataset_coco.json").write_text(content)
    with pytest.raises(DatasetLayoutError, match=words) as error:
        open_split(tmp_path, "train", 28, data_format="karpathy")
    assert "\n" not in str(error.value) and "dataset_coco.json" in str(error.value)


# -- evaluate.py on photographs ----------------------------------------------------------------------
def test_evaluate_measures_text_to_image_and_warns_of_training_images(evaluate, karpathy_run, karpathy_dir, capsys):
    output = karpathy_run.parent / "karpathy.json"
    assert evaluate(["--checkpoint", str(karpathy_run), "--data-dir", str(karpathy_dir), "--data-format", "karpathy",
                     "--steps", "2", "--num-t2i", "6", "--batch-size", "4", "--output", str(output)]) == 0
    printed = capsys.readouterr()
    results = json.loads(output.read_text())
    metrics = results["metrics"]
    assert results["settings"]["split"] == "test" and results["settings"]["num_beams"] == 3
    assert metrics["images"] == 4 and metrics["prompts"] == 6  # every first caption, then two second ones
    assert metrics["t2i/FD_effnet"].startswith("not computed: the real images: 4 images for 1280 features")
    assert isinstance(metrics["t2i/KID_effnet"], float) and metrics["t2i/KID_effnet_subset"] == 4
    assert 0.0 <= metrics["t2i/R-precision_own_encoders"] <= 1.0 and metrics["t2i/R-precision_candidates"] == 7
    assert -1.0 <= metrics["t2i/CLIP-score_own_encoders"] <= 1.0
    assert 0.0 <= metrics["caption/CIDEr-D"] and metrics["caption/tokenization"].startswith(
        "PTB" if ptb_available() else "Java-free")
    assert set(results["seconds_per_image"]) >= {"t2i", "FD_effnet", "KID_effnet", "R-precision", "CLIP-score",
                                                 "caption", "retrieval", "real_features"}
    assert format_table(metrics) in printed.out and "seconds per image" in printed.out
    assert "not FID" in printed.out and "own encoders" in printed.out
    assert "karpathy test split" in printed.out
    warning = [line for line in printed.err.splitlines() if "training images of this checkpoint" in line]
    assert len(warning) == 1 and "warning: 2 of the 4 images evaluated" in warning[0]


@pytest.mark.parametrize("flags, words", [
    (["--no-t2i-metrics", "--num-t2i", "3"], "--num-t2i is for the text→image metrics"),
    (["--split", "test", "--data-format", "coco"], "has no test split"),
    (["--num-t2i", "3", "--steps", "1"], "--num-t2i 3: the 2 images evaluated have 2 captions"),
])
def test_bad_photograph_flags_are_one_line_and_exit_code_2(evaluate, karpathy_run, coco_2017, capsys, flags, words):
    with pytest.raises(SystemExit) as exit_:
        evaluate(["--checkpoint", str(karpathy_run), "--data-dir", str(coco_2017), *flags])
    stderr = capsys.readouterr().err
    assert exit_.value.code == 2 and words in stderr and len(stderr.strip().splitlines()) == 1  # before any bar
