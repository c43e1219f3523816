from dataclasses import asdict

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from multimodal.data.shapes import all_combinations, captions_for, render_shape
from multimodal.data.shapes_reader import parse_caption_attributes, read_shape_attributes
from multimodal.evaluation import format_table
from multimodal.metrics import attribute_accuracy, caption_scores, retrieval_recall

SPECS = all_combinations()


def _read_all(image_size, seed, degrade=lambda image, rng: image):
    rng = np.random.default_rng(seed)
    images = [degrade(render_shape(spec, image_size, rng), rng) for spec in SPECS]
    predicted = [read_shape_attributes(image) for image in images]
    return attribute_accuracy(predicted, [asdict(spec) for spec in SPECS])


@pytest.mark.parametrize("image_size", [56, 64])
def test_reader_is_exact_on_clean_renders(image_size):
    for seed in range(2):
        assert _read_all(image_size, seed)["all"] == 1.0


def _blur_and_noise(image, rng):
    blurred = np.asarray(image.filter(ImageFilter.GaussianBlur(1)), dtype=np.float64)
    noisy = blurred + rng.normal(0.0, 10.0, blurred.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).round().astype(np.uint8))


def test_reader_is_robust_to_blur_and_noise():
    assert _read_all(64, 0, _blur_and_noise)["all"] >= 0.97


def test_reader_takes_float_arrays_and_dim_pictures():
    spec = SPECS[17]
    image = np.asarray(render_shape(spec, 64, np.random.default_rng(0)), dtype=np.float32) / 255
    assert read_shape_attributes(image * 0.4) == asdict(spec)


def test_reader_finds_nothing_in_an_empty_picture():
    assert read_shape_attributes(Image.new("RGB", (64, 64))) is None
    speckle = np.random.default_rng(0).normal(0, 5, (64, 64, 3)).clip(0, 255).astype(np.uint8)
    assert read_shape_attributes(speckle) is None


def test_parser_reads_every_phrasing():
    for spec in SPECS:
        for caption in captions_for(spec):
            assert parse_caption_attributes(caption) == asdict(spec), caption
    assert parse_caption_attributes("A Large RED triangle, left.") == {
        "shape": "triangle",
        "color": "red",
        "size": "large",
        "position": "left",
    }


def test_parser_leaves_missing_or_conflicting_attributes_empty():
    empty = dict.fromkeys(["shape", "color", "size", "position"])
    assert parse_caption_attributes("") == empty
    assert parse_caption_attributes("the the the of a") == empty
    assert parse_caption_attributes("a red blue circle circle at the top") == {
        "shape": "circle",
        "color": None,
        "size": None,
        "position": "top",
    }


def test_attribute_accuracy():
    truth = [
        {"shape": "circle", "color": "red", "size": "small", "position": "left"},
        {"shape": "square", "color": "blue", "size": "large", "position": "top"},
        {"shape": "triangle", "color": "cyan", "size": "small", "position": "center"},
        {"shape": "circle", "color": "green", "size": "large", "position": "right"},
    ]
    predicted = [
        dict(truth[0]),
        {**truth[1], "color": "purple"},
        {**truth[2], "shape": None, "position": "bottom"},
        None,
    ]
    assert attribute_accuracy(predicted, truth) == {
        "shape": 0.5,
        "color": 0.5,
        "size": 0.75,
        "position": 0.5,
        "all": 0.25,
    }
    with pytest.raises(ValueError):
        attribute_accuracy(predicted[:2], truth)


def _unit(*angles):
    """2-d unit vectors at these angles (degrees): a dot product is the cosine of the gap."""
    radians = torch.tensor(angles, dtype=torch.float64).deg2rad()
    return torch.stack([radians.cos(), radians.sin()], dim=1)


def test_retrieval_recall_one_positive_per_image():
    # Shapes-like: text j at 10·j degrees. Image 0 (0°) sits on its text 0. Image 1 (20°)
    # belongs to text 8 (80°, 60° away): texts 0–7 are closer, so it ranks 9th. Image 2 (55°)
    # belongs to text 0 (55° away): the other 11 texts are as close or closer.
    texts = _unit(*range(0, 120, 10))
    images = _unit(0, 20, 55)
    recall = retrieval_recall(images, texts, [0, 8, 0], ks=(1, 5, 10))
    assert recall["i2t_R@1"] == pytest.approx(1 / 3)
    assert recall["i2t_R@5"] == pytest.approx(1 / 3)
    assert recall["i2t_R@10"] == pytest.approx(2 / 3)
    # Text 0's nearest image, image 0, is one of its two; text 8's images by closeness: 2, 1.
    # Texts that no image points at are left out.
    assert recall["t2i_R@1"] == pytest.approx(1 / 2)
    assert recall["t2i_R@5"] == pytest.approx(1.0)


def test_retrieval_recall_several_positives_per_image():
    # COCO-like: image 0 (0°) owns texts 0 (0°) and 1 (170°); image 1 (90°) owns texts
    # 2 (0°) and 3 (45°).
    images = _unit(0, 90)
    texts = _unit(0, 170, 0, 45)
    recall = retrieval_recall(images, texts, [[0, 1], [2, 3]], ks=(1, 2))
    # Image 0: text 0 or text 2 (both 0°) first, a tie that counts against it → rank 2.
    # Image 1: text 3 (45°) ranks first.
    assert recall["i2t_R@1"] == pytest.approx(1 / 2)
    assert recall["i2t_R@2"] == pytest.approx(1.0)
    # Text 0 → image 0 first (right); text 1 (170°) → image 1 first (wrong); text 2 → image 0
    # first (wrong); text 3 (45°) → both images tie (counts as wrong at K=1).
    assert recall["t2i_R@1"] == pytest.approx(1 / 4)
    assert recall["t2i_R@2"] == pytest.approx(1.0)


def test_retrieval_recall_of_collapsed_embeddings_is_not_perfect():
    ones = torch.ones(10, 4)
    recall = retrieval_recall(ones, ones, [[i] for i in range(10)], ks=(1, 10))
    assert recall == {"i2t_R@1": 0.0, "i2t_R@10": 1.0, "t2i_R@1": 0.0, "t2i_R@10": 1.0}


def test_caption_scores():
    references = {
        1: ["A large red circle on the left.", "there is a large red circle on the left"],
        2: ["a small blue square at the top", "at the top, a small blue square"],
        3: ["a large green triangle in the center", "a large green triangle is in the center"],
    }
    identical = {key: refs[0] for key, refs in references.items()}
    scores = caption_scores(references, identical)
    assert scores["BLEU-4"] == pytest.approx(1.0, abs=1e-6)
    assert scores["CIDEr"] > 0
    unrelated = {1: "dogs playing football", 2: "my cat sleeps all day", 3: "an empty station"}
    scores = caption_scores(references, unrelated)
    assert scores["BLEU-4"] < 1e-3
    assert scores["CIDEr"] < 1e-3


def test_format_table():
    table = format_table({"i2t_R@1": 0.5, "CIDEr": 1.23456, "images": 180})
    lines = table.splitlines()
    assert len(lines) == 5
    assert len({len(line) for line in lines}) == 1  # every line as wide: the columns align
    assert lines[2].split() == ["i2t_R@1", "0.5000"]
    assert lines[4].split() == ["images", "180"]
