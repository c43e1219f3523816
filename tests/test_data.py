"""The data layer: COCO loader robustness, the shapes generator against its spec, conversions."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from multimodal.data import (
    COLORS,
    POSITION_PHRASES,
    POSITIONS,
    SHAPES,
    SIZES,
    CocoCaptionDataset,
    DatasetLayoutError,
    ShapeSpec,
    all_combinations,
    canonical_caption,
    captions_for,
    generate_shapes_dataset,
    image_transform,
    load_rgb,
    render_shape,
    to_pil,
)

COCO_MINI = Path(__file__).resolve().parents[2] / "shared" / "coco-mini"


# --------------------------------------------------------------------------- COCO loader


@pytest.fixture()
def tiny_coco(tmp_path: Path) -> Path:
    """A COCO-layout folder with every problem the loader must survive."""
    root = tmp_path / "coco"
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(root / "val2017" / "rgb.jpg")
    Image.new("L", (30, 50), 128).save(root / "val2017" / "gray.jpg")
    # CMYK (0, 255, 255, 0) is pure red.
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(root / "val2017" / "cmyk.jpg")
    Image.new("RGB", (32, 32)).save(root / "val2017" / "uncaptioned.jpg")
    (root / "val2017" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    names = ["rgb.jpg", "gray.jpg", "cmyk.jpg", "missing.jpg", "uncaptioned.jpg", "corrupt.jpg"]
    images = [
        {"id": i + 1, "file_name": name, "width": 32, "height": 32} for i, name in enumerate(names)
    ]
    captions = {
        1: ["a red picture", "  red, again \n", "   "],
        2: ["a gray picture"],
        3: ["a red cmyk picture"],
        4: ["this file is missing"],
        6: ["this file is corrupt"],
    }
    annotations = [
        {"id": len(images) * 10 + k, "image_id": image_id, "caption": caption}
        for image_id, caps in captions.items()
        for k, caption in enumerate(caps)
    ]
    data = {"info": {}, "licenses": [], "images": images, "annotations": annotations}
    (root / "annotations" / "captions_val2017.json").write_text(json.dumps(data))
    return root


def test_loader_skips_missing_and_uncaptioned_and_converts_to_rgb(tiny_coco: Path) -> None:
    with pytest.warns(UserWarning, match="1 images listed .* missing"):
        ds = CocoCaptionDataset(tiny_coco, split="val", image_size=16)
    # rgb, gray, cmyk, corrupt (found only when read); missing and uncaptioned are left out.
    assert len(ds) == 4
    assert ds.num_missing == 1 and ds.num_skipped == 1
    assert ds.captions == [
        "a red picture",
        "red, again",
        "a gray picture",
        "a red cmyk picture",
        "this file is corrupt",
    ]

    rgb, gray, cmyk = ds[0], ds[1], ds[2]
    assert [s["image_id"] for s in (rgb, gray, cmyk)] == [1, 2, 3]
    for sample in (rgb, gray, cmyk):
        assert sample["image"].shape == (3, 16, 16)
        assert sample["image"].dtype == torch.float32
        assert sample["image"].min() >= -1 and sample["image"].max() <= 1
    assert rgb["caption"] in ("a red picture", "red, again")
    assert gray["caption"] == "a gray picture"
    # Grayscale 128 → all three channels ≈ 0; CMYK red → R high, G and B low.
    assert torch.allclose(gray["image"], torch.full_like(gray["image"], 0.0), atol=0.02)
    red = cmyk["image"].mean(dim=(1, 2))
    assert red[0] > 0.9 and red[1] < -0.9 and red[2] < -0.9


def test_loader_replaces_corrupt_file_with_neighbour(tiny_coco: Path) -> None:
    with pytest.warns(UserWarning):
        ds = CocoCaptionDataset(tiny_coco, split="val", image_size=16)
    with pytest.warns(UserWarning, match="unreadable image .*corrupt.jpg"):
        sample = ds[3]
    # Index 3 is the corrupt file; its neighbour (wrapping round) is index 0.
    assert sample["image_id"] == 1
    assert sample["caption"] == ds[0]["caption"]
    assert ds.num_corrupt == 1 and ds.num_skipped == 2
    assert ds[3]["image_id"] == 1  # the same answer again, without a second report
    assert ds.num_skipped == 2


def test_caption_choice_is_deterministic_per_seed_and_epoch(tiny_coco: Path) -> None:
    with pytest.warns(UserWarning):
        a = CocoCaptionDataset(tiny_coco, split="val", image_size=8, seed=3)
        b = CocoCaptionDataset(tiny_coco, split="val", image_size=8, seed=3)

    def epoch_captions(ds: CocoCaptionDataset, epoch: int) -> list[str]:
        ds.set_epoch(epoch)
        return [ds[0]["caption"] for _ in range(2)]

    per_epoch = [epoch_captions(a, e) for e in range(16)]
    assert per_epoch == [epoch_captions(b, e) for e in range(16)]
    assert all(c[0] == c[1] for c in per_epoch)
    assert {c[0] for c in per_epoch} == {"a red picture", "red, again"}  # both get drawn


def test_all_pairs_gives_every_caption(tiny_coco: Path) -> None:
    with pytest.warns(UserWarning):
        ds = CocoCaptionDataset(tiny_coco, split="val", image_size=8, all_pairs=True)
    assert len(ds) == 5
    assert [ds[i]["caption"] for i in range(3)] == [
        "a red picture",
        "red, again",
        "a gray picture",
    ]
    assert [ds[i]["image_id"] for i in range(3)] == [1, 1, 2]


def test_missing_root_names_layout_and_shapes_preset(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError) as info:
        CocoCaptionDataset(tmp_path / "nowhere", split="train")
    message = str(info.value)
    assert "\n" not in message
    assert "nowhere" in message
    assert "train2017" in message and "annotations/captions_{train,val}2017.json" in message
    assert "--preset shapes" in message


def test_wrong_json_and_missing_annotation_file_raise_layout_error(tiny_coco: Path) -> None:
    with pytest.raises(DatasetLayoutError, match="image folder .*train2017 not found"):
        CocoCaptionDataset(tiny_coco, split="train")
    (tiny_coco / "train2017").mkdir()
    with pytest.raises(DatasetLayoutError, match="annotation file .*captions_train2017.json"):
        CocoCaptionDataset(tiny_coco, split="train")
    annotation_file = tiny_coco / "annotations" / "captions_train2017.json"
    annotation_file.write_text("[1, 2, 3]")
    with pytest.raises(DatasetLayoutError, match="not a COCO"):
        CocoCaptionDataset(tiny_coco, split="train")
    instances = {"images": [], "annotations": [{"id": 1, "image_id": 1, "bbox": [0, 0, 1, 1]}]}
    annotation_file.write_text(json.dumps(instances))
    with pytest.raises(DatasetLayoutError, match="not a COCO captions file"):
        CocoCaptionDataset(tiny_coco, split="train")
    # Valid captions but no image unzipped: nothing to train on.
    captions = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 8, "height": 8}],
        "annotations": [{"id": 1, "image_id": 1, "caption": "a cat"}],
    }
    annotation_file.write_text(json.dumps(captions))
    with pytest.raises(DatasetLayoutError, match="no captioned image .* found in .*train2017"):
        CocoCaptionDataset(tiny_coco, split="train")


@pytest.mark.skipif(not COCO_MINI.is_dir(), reason=f"{COCO_MINI} not present")
def test_real_coco_sample() -> None:
    ds = CocoCaptionDataset(COCO_MINI, split="val", image_size=32)
    assert len(ds) == 79 and ds.num_skipped == 0
    assert len(ds.captions) >= 79 * 5 - 5  # five human captions an image, few duplicates
    for i in range(len(ds)):
        sample = ds[i]
        assert sample["image"].shape == (3, 32, 32)
        assert -1 <= sample["image"].min() and sample["image"].max() <= 1
        assert isinstance(sample["caption"], str) and sample["caption"]
    assert ds.num_skipped == 0


# --------------------------------------------------------------------------- shapes


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_shapes_dataset(
        tmp_path_factory.mktemp("data") / "shapes",
        num_train=360,
        num_val=180,
        image_size=64,
        seed=1,
        progress=False,
    )


def _split(root: Path, split: str) -> tuple[list[dict], dict[int, list[str]]]:
    data = json.loads((root / "annotations" / f"captions_{split}2017.json").read_text())
    captions: dict[int, list[str]] = {}
    for ann in data["annotations"]:
        captions.setdefault(ann["image_id"], []).append(ann["caption"])
    return data["images"], captions


def test_shapes_constants_and_captions() -> None:
    assert SHAPES == ("circle", "square", "triangle")
    assert list(COLORS) == ["red", "green", "blue", "yellow", "purple", "cyan"]
    assert COLORS["red"] == (220, 40, 40) and COLORS["cyan"] == (50, 200, 210)
    assert SIZES == {"small": 0.25, "large": 0.5}
    assert POSITIONS["left"] == (0.27, 0.5) and POSITIONS["bottom"] == (0.5, 0.73)
    combos = all_combinations()
    assert len(combos) == len(set(combos)) == 180
    spec = ShapeSpec("circle", "red", "large", "left")
    assert canonical_caption(spec) == "a large red circle on the left"
    phrasings = captions_for(spec)
    assert phrasings[:3] == [
        "a large red circle on the left",
        "there is a large red circle on the left",
        "on the left, a large red circle",
    ]
    assert len(set(phrasings)) == len(phrasings)


def test_shapes_layout_and_captions(shapes_root: Path) -> None:
    train, train_caps = _split(shapes_root, "train")
    val, _ = _split(shapes_root, "val")
    assert len(train) == 360 and len(val) == 180
    assert {ShapeSpec(**im["shape"]) for im in train} == set(all_combinations())
    assert {ShapeSpec(**im["shape"]) for im in val} == set(all_combinations())
    assert not {im["id"] for im in train} & {im["id"] for im in val}
    for im in train:
        spec = ShapeSpec(**im["shape"])
        caps = train_caps[im["id"]]
        assert len(caps) >= 3 and caps[0] == canonical_caption(spec)
        for caption in caps:
            words = caption.replace(",", "").split()
            assert {spec.size, spec.color, spec.shape} <= set(words)
            assert POSITION_PHRASES[spec.position] in caption
        assert (shapes_root / "train2017" / im["file_name"]).is_file()


def _check_image(pixels: np.ndarray, spec: ShapeSpec) -> None:
    side = pixels.shape[0]
    color = np.array(COLORS[spec.color])
    assert pixels.shape == (side, side, 3)
    for y, x in ((0, 0), (0, side - 1), (side - 1, 0), (side - 1, side - 1)):
        assert (pixels[y, x] == 0).all()
    foreground = pixels.any(axis=-1)
    # One flat colour, no outline, no blur.
    assert (pixels[foreground] == color).all()
    ys, xs = np.nonzero(foreground)
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    width, height = x1 - x0 + 1, y1 - y0 + 1
    expected = SIZES[spec.size] * side
    for extent in (width, height):
        assert abs(extent - expected) <= 0.08 * expected + 1
    fx, fy = POSITIONS[spec.position]
    assert abs((x0 + x1 + 1) / 2 - fx * side) <= 0.03 * side + 1
    assert abs((y0 + y1 + 1) / 2 - fy * side) <= 0.03 * side + 1
    assert (pixels[(y0 + y1) // 2, (x0 + x1) // 2] == color).all()

    fill = foreground.sum() / (width * height)
    if spec.shape == "circle":
        assert 0.72 <= fill <= 0.85  # π/4 ≈ 0.785
    elif spec.shape == "square":
        assert fill == 1.0
    else:
        assert 0.42 <= fill <= 0.6  # ½
        near_top = foreground[y0 + height // 4].sum()
        near_bottom = foreground[y1 - height // 4].sum()
        assert near_top < near_bottom
        assert foreground[y1, x0] and foreground[y1, x1]  # horizontal base, full width


def test_shapes_images_match_their_captions(shapes_root: Path) -> None:
    images, _ = _split(shapes_root, "train")
    for im in images:
        with Image.open(shapes_root / "train2017" / im["file_name"]) as image:
            assert image.mode == "RGB" and image.size == (64, 64)
            _check_image(np.asarray(image), ShapeSpec(**im["shape"]))


@pytest.mark.parametrize("rng", [random.Random(5), np.random.default_rng(5)])
def test_render_shape_accepts_both_rngs(rng: random.Random | np.random.Generator) -> None:
    for spec in all_combinations():
        _check_image(np.asarray(render_shape(spec, 96, rng)), spec)


def test_shapes_generation_is_reproducible_and_idempotent(tmp_path: Path) -> None:
    kwargs = dict(num_train=30, num_val=10, image_size=32, progress=False)
    a = generate_shapes_dataset(tmp_path / "a", seed=7, **kwargs)
    b = generate_shapes_dataset(tmp_path / "b", seed=7, **kwargs)
    c = generate_shapes_dataset(tmp_path / "c", seed=8, **kwargs)

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    assert len(files(a)) == 30 + 10 + 2 + 1
    assert files(a) == files(b)
    assert files(a) != files(c)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]  # no temp folders left

    stamp = (a / "shapes.json").stat().st_mtime_ns
    assert generate_shapes_dataset(a, seed=7, **kwargs) == a
    assert (a / "shapes.json").stat().st_mtime_ns == stamp  # nothing rewritten
    generate_shapes_dataset(a, seed=8, **kwargs)  # other parameters: regenerated in place
    assert files(a) == files(c)


def test_shapes_generator_refuses_to_overwrite_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        generate_shapes_dataset(tmp_path, num_train=1, num_val=1, progress=False)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_loader_reads_shapes_exactly(shapes_root: Path) -> None:
    ds = CocoCaptionDataset(shapes_root, split="val", image_size=64)
    images, captions = _split(shapes_root, "val")
    assert len(ds) == 180 and ds.num_skipped == 0
    sample = ds[0]
    assert sample["caption"] in captions[images[0]["id"]]
    with Image.open(shapes_root / "val2017" / images[0]["file_name"]) as image:
        assert np.array_equal(np.asarray(to_pil(sample["image"])), np.asarray(image))


# --------------------------------------------------------------------------- conversions


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (Image.new("L", (4, 4), 100), (100, 100, 100)),
        (Image.new("LA", (4, 4), (100, 0)), (0, 0, 0)),
        (Image.new("RGBA", (4, 4), (10, 20, 30, 255)), (10, 20, 30)),
        (Image.new("RGBA", (4, 4), (200, 100, 50, 0)), (0, 0, 0)),
        (Image.new("CMYK", (4, 4), (0, 255, 255, 0)), (255, 0, 0)),
        (Image.new("I;16", (4, 4), 65535), (255, 255, 255)),
        (Image.new("I;16", (4, 4), 257 * 40), (40, 40, 40)),
        (Image.new("1", (4, 4), 1), (255, 255, 255)),
        (Image.new("RGB", (4, 4), (50, 90, 230)).quantize(4), (50, 90, 230)),
    ],
)
def test_load_rgb_converts_every_mode(image: Image.Image, expected: tuple[int, int, int]) -> None:
    rgb = load_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == (4, 4)
    assert rgb.getpixel((1, 1)) == expected


def test_load_rgb_transparency_over_black_from_files(tmp_path: Path) -> None:
    path = tmp_path / "half.png"
    Image.new("RGBA", (4, 4), (200, 100, 50, 128)).save(path)
    r, g, b = load_rgb(path).getpixel((0, 0))
    assert abs(r - 100) <= 1 and abs(g - 50) <= 1 and abs(b - 25) <= 1

    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([50, 90, 230, 250, 250, 250])
    palette.putpixel((0, 0), 1)  # white, but marked transparent
    palette.save(tmp_path / "palette.png", transparency=1)
    rgb = load_rgb(tmp_path / "palette.png")
    assert rgb.getpixel((0, 0)) == (0, 0, 0) and rgb.getpixel((1, 1)) == (50, 90, 230)


def test_transform_and_to_pil_round_trip() -> None:
    image = Image.new("RGB", (80, 40), (0, 0, 0))
    image.paste((220, 40, 40), (20, 0, 60, 40))  # the centred 40×40 square
    tensor = image_transform(40)(image)
    assert tensor.shape == (3, 40, 40)
    # The crop keeps exactly the red square: every pixel is red, scaled to [-1, 1].
    expected = torch.tensor([220, 40, 40]).view(3, 1, 1) / 127.5 - 1
    assert torch.allclose(tensor, expected.expand(3, 40, 40), atol=1e-6)
    assert to_pil(tensor).getpixel((5, 5)) == (220, 40, 40)
    assert to_pil(tensor.unsqueeze(0)).size == (40, 40)
    with pytest.raises(ValueError):
        to_pil(torch.zeros(2, 3, 4, 4))
