"""Malformed data sets: every reader refuses in one line that names the file and the entry (or
line), never a traceback; a data folder only reaches files inside itself; a set none of whose
images can be read is refused before training; text files are read as spreadsheets write them."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Callable

import pytest
from PIL import Image

from conftest import REPO, TINY_FLAGS
from multimodal.data import open_split
from multimodal.data.__main__ import main as data_main
from multimodal.data.convert import convert
from multimodal.errors import DatasetLayoutError


def image(path: Path, colour: tuple[int, int, int] = (200, 0, 0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), colour).save(path)
    return path


def refused_by_every_command(data_dir: Path, message: str, tmp_path: Path, capsys) -> None:
    """`check` exits 2 naming `message`; training's and evaluation's open_split and `convert`
    raise it in one line, and convert leaves nothing behind."""
    assert data_main(["check", str(data_dir), "--no-open-images"]) == 2
    out = capsys.readouterr().out
    assert message in out and "it would not train" in out, out
    with pytest.raises(DatasetLayoutError) as info:
        open_split(data_dir, "train", 16)
    assert message in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(DatasetLayoutError) as info:
        convert(str(data_dir), tmp_path / "converted", "imagefolder")
    assert message in str(info.value)
    assert not any(p.name.startswith("converted") for p in tmp_path.iterdir())


# -- COCO JSON --------------------------------------------------------------------------------
def coco(root: Path, change: Callable[[dict], object]) -> Path:
    """Three captioned images a split; `change` edits (or replaces) the train JSON."""
    (root / "annotations").mkdir(parents=True)
    for split, first in (("train", 1), ("val", 4)):
        images, annotations = [], []
        for image_id in range(first, first + 3):
            image(root / f"{split}2017" / f"{image_id}.jpg", (image_id * 40, 0, 0))
            images.append({"id": image_id, "file_name": f"{image_id}.jpg"})
            annotations.append({"id": 10 + image_id, "image_id": image_id, "caption": f"picture {image_id}"})
        data = {"images": images, "annotations": annotations}
        if split == "train":
            data = change(data) or data
        (root / "annotations" / f"captions_{split}2017.json").write_text(json.dumps(data))
    return root


def edit(entry: str, index: int, **values) -> Callable[[dict], None]:
    return lambda data: data[entry][index].update(values)


def drop(entry: str, index: int, key: str) -> Callable[[dict], None]:
    return lambda data: None if data[entry][index].pop(key) else None


JSON = "captions_train2017.json"
COCO_CASES = {
    "caption a number": (edit("annotations", 1, caption=5), f"{JSON}: annotations[1] (id 12) has caption 5, not a string"),
    "caption null": (edit("annotations", 1, caption=None),
                     f"{JSON}: annotations[1] (id 12) has caption null, not a string"),
    "image without file_name": (drop("images", 1, "file_name"), f"{JSON}: images[1] (id 2) has no file_name"),
    "image id a string": (edit("images", 1, id="2"), f'{JSON}: images[1] has id "2", not an integer'),
    "image id a fraction": (edit("images", 1, id=2.5), f"{JSON}: images[1] has id 2.5, not an integer"),
    "annotation image_id a string": (edit("annotations", 0, image_id="1"),
                                     f'{JSON}: annotations[0] has image_id "1", not an integer'),
    "file_name a number": (edit("images", 1, file_name=7), f"{JSON}: images[1] (id 2) has file_name 7, not a string"),
    "duplicate image id": (lambda d: d["images"].append({"id": 1, "file_name": "2.jpg"}),
                           f"{JSON}: images[3] has id 1, as images[0] has; every image needs its own id"),
    "image not an object": (lambda d: d["images"].append("3.jpg"), f'{JSON}: images[3] is "3.jpg", not an object'),
    "file_name climbs out": (edit("images", 1, file_name="../../outside.jpg"),
                             f'{JSON}: images[1] (id 2) has file_name "../../outside.jpg", which is outside'),
    "file_name absolute": (edit("images", 1, file_name="/etc/hostname"),
                           f'{JSON}: images[1] (id 2) has file_name "/etc/hostname", which is an absolute path'),
    "a JSON list": (lambda d: [d], f"{JSON} is not a COCO JSON file (a JSON list, not an object"),
}


@pytest.mark.parametrize("change, message", COCO_CASES.values(), ids=COCO_CASES)
def test_malformed_coco_json_is_refused_in_one_line_by_every_command(change, message, tmp_path, capsys):
    root = coco(tmp_path / "data", change)
    image(tmp_path / "outside.jpg")
    refused_by_every_command(root, message, tmp_path, capsys)


# -- references outside the data folder --------------------------------------------------------
def metadata(root: Path, name: str, rows: list[dict], encoding: str = "utf-8") -> Path:
    for i in range(4):
        image(root / f"{i}.jpg", (i * 50, 0, 0))
    if name.endswith(".csv"):
        text = "file_name,text\n" + "".join(f"{row['file_name']},{row['text']}\n" for row in rows)
    else:
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    (root / name).write_bytes(text.encode(encoding))
    return root


ROWS = [{"file_name": f"{i}.jpg", "text": f"picture {i}"} for i in range(4)]


@pytest.mark.parametrize("listing", ["metadata.jsonl", "metadata.csv"])
@pytest.mark.parametrize("name, problem", [
    ("../outside.jpg", "is outside"),
    ("sub/../../outside.jpg", "is outside"),
    ("{outside}", "is an absolute path"),
])
def test_a_metadata_file_cannot_reach_outside_its_folder(listing, name, problem, tmp_path, capsys):
    outside = image(tmp_path / "outside.jpg", (0, 0, 255))
    name = name.format(outside=outside)
    root = metadata(tmp_path / "data", listing, ROWS[:2] + [{"file_name": name, "text": "blue"}] + ROWS[2:])
    line = 4 if listing.endswith(".csv") else 3
    refused_by_every_command(root, f"{listing}:{line}: 'file_name' {json.dumps(name)} {problem}", tmp_path, capsys)


def test_links_and_dots_the_user_made_inside_the_folder_are_followed(tmp_path):
    outside = image(tmp_path / "elsewhere" / "blue.jpg", (0, 0, 255))
    root = metadata(tmp_path / "data", "metadata.jsonl", ROWS + [{"file_name": "./sub/../link.jpg", "text": "blue"}])
    (root / "link.jpg").symlink_to(outside)
    train, val = open_split(root, "train", 16), open_split(root, "val", 16)
    assert str(root / "link.jpg") in train.paths + val.paths


# -- a set none of whose images can be read ---------------------------------------------------
def unreadable_folder(root: Path) -> Path:
    root.mkdir()
    for i in range(40):
        (root / f"{i:02d}.jpg").write_bytes(b"not a picture")
    (root / "metadata.jsonl").write_text("".join(json.dumps({"file_name": f"{i:02d}.jpg", "text": f"pic {i}"}) + "\n"
                                                 for i in range(40)))
    return root


def unreadable_shards(root: Path) -> Path:
    import webdataset as wds

    root.mkdir()
    with wds.TarWriter(str(root / "000000.tar")) as writer:
        for i in range(40):
            writer.write({"__key__": f"k{i:02d}", "jpg": b"not a picture", "txt": f"pic {i}"})
    return root


def unreadable_parquet(root: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root.mkdir()
    table = pa.table({"image": [b"not a picture"] * 40, "text": [f"pic {i}" for i in range(40)]})
    pq.write_table(table, root / "train-00000-of-00001.parquet")
    return root


@pytest.mark.parametrize("make", [unreadable_folder, unreadable_shards, unreadable_parquet])
def test_a_set_whose_every_image_is_unreadable_is_refused_before_training(make, tmp_path, capsys):
    data_dir = make(tmp_path / "data")
    with pytest.raises(DatasetLayoutError) as info:
        open_split(data_dir, "train", 16)
    message = str(info.value)
    assert message.startswith("none of the ") and " could be read; first: " in message and "\n" not in message
    assert "not an image file PIL can identify" in message
    assert data_main(["check", str(data_dir)]) == 2
    assert "error: " + str(data_dir) + ": none of the " in capsys.readouterr().out


def test_train_py_refuses_an_unreadable_set_in_one_line_and_writes_nothing(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("train_script", REPO / "train.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    data_dir = unreadable_folder(tmp_path / "data")
    output = tmp_path / "run"
    assert train.main(["--data-dir", str(data_dir), "--output-dir", str(output), *TINY_FLAGS]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: none of the ") and len(err.strip().splitlines()) == 1, err
    assert not output.exists()


def test_one_readable_image_is_enough_and_the_others_are_skipped(tmp_path):
    from multimodal.data.layouts import is_held_out

    data_dir = unreadable_folder(tmp_path / "data")
    last = max(i for i in range(40) if not is_held_out(f"{i:02d}.jpg", 0.05))
    image(data_dir / f"{last:02d}.jpg")
    with pytest.warns(UserWarning, match="unreadable image"):
        train = open_split(data_dir, "train", 16)
    assert train[0]["caption"] == f"pic {last}"


# -- text encodings ---------------------------------------------------------------------------
UNICODE_ROWS = ROWS[:2] + [{"file_name": "2.jpg", "text": "un café crème"}]


@pytest.mark.parametrize("listing", ["metadata.csv", "metadata.jsonl"])
@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])  # Excel's "CSV UTF-8", and "Unicode Text"
def test_byte_order_marks_and_utf16_are_read_as_spreadsheets_write_them(listing, encoding, tmp_path):
    root = metadata(tmp_path / "data", listing, UNICODE_ROWS, encoding)
    train, val = open_split(root, "train", 16), open_split(root, "val", 16)
    assert "un café crème" in train.captions + val.captions
    assert not any("\ufffd" in c or "\ufeff" in c for c in train.captions + val.captions)


def latin1_metadata(root: Path) -> Path:
    return metadata(root, "metadata.csv", UNICODE_ROWS, "latin-1")


def utf16_without_bom(root: Path) -> Path:
    return metadata(root, "metadata.jsonl", UNICODE_ROWS, "utf-16-le")


def latin1_paired(root: Path) -> Path:
    for i, caption in enumerate(["red", "blue\nun café"]):
        image(root / f"{i}.jpg")
        (root / f"{i}.txt").write_bytes(caption.encode("latin-1"))
    return root


def latin1_captions_txt(root: Path) -> Path:
    for i in (1, 2, 3):
        image(root / "images" / f"{i}.jpg")
    (root / "captions.txt").write_bytes("red\nblue\ncafé\n".encode("latin-1"))
    return root


def latin1_shard(root: Path) -> Path:
    import webdataset as wds

    root.mkdir()
    with wds.TarWriter(str(root / "000000.tar")) as writer:
        for i in range(3):
            writer.write({"__key__": f"k{i}", "jpg": image(root.parent / f"{i}.jpg").read_bytes(),
                          "json": json.dumps({"text": f"café {i}"}, ensure_ascii=False).encode("latin-1")})
    return root


ENCODING_CASES = [
    (latin1_metadata, "metadata.csv:4: not UTF-8 text (byte 0xe9); save it as UTF-8"),
    (utf16_without_bom, "metadata.jsonl:1: holds NUL bytes (UTF-16 without a byte-order mark?); save it as UTF-8"),
    (latin1_paired, "1.txt:2: not UTF-8 text (byte 0xe9); save it as UTF-8"),
    (latin1_captions_txt, "captions.txt:3: not UTF-8 text (byte 0xe9); save it as UTF-8"),
    (latin1_shard, "000000.tar: sample k0: .json:1: not UTF-8 text (byte 0xe9)"),
]


@pytest.mark.parametrize("make, message", ENCODING_CASES, ids=[make.__name__ for make, _ in ENCODING_CASES])
def test_text_that_is_not_utf8_is_refused_at_its_line(make, message, tmp_path, capsys):
    data_dir = make(tmp_path / "data")
    assert data_main(["check", str(data_dir), "--no-open-images"]) == 2
    out = capsys.readouterr().out
    assert message in out and "Traceback" not in out, out
    with pytest.raises(DatasetLayoutError, match="not UTF-8|NUL bytes"):
        open_split(data_dir, "train", 16)


# -- other malformed input --------------------------------------------------------------------
def image_folder_is_a_file(root: Path) -> Path:
    coco(root, lambda data: None)
    for path in (root / "train2017").iterdir():
        path.unlink()
    (root / "train2017").rmdir()
    (root / "train2017").write_text("not a folder")
    return root


def annotation_file_is_a_folder(root: Path) -> Path:
    coco(root, lambda data: None)
    (root / "annotations" / "captions_train2017.json").unlink()
    (root / "annotations" / "captions_train2017.json").mkdir()
    return root


def deeply_nested_json_line(root: Path) -> Path:
    metadata(root, "metadata.jsonl", ROWS)
    with open(root / "metadata.jsonl", "a") as file:
        file.write("[" * 100_000 + "\n")
    return root


OTHER_CASES = [
    (image_folder_is_a_file, "train2017 is a file, not a folder"),
    (annotation_file_is_a_folder, "captions_train2017.json: cannot be read (Is a directory)"),
    (deeply_nested_json_line, "metadata.jsonl:5: not a JSON line (nested too deeply)"),
]


@pytest.mark.parametrize("make, message", OTHER_CASES, ids=[make.__name__ for make, _ in OTHER_CASES])
def test_other_malformed_sets_are_refused_in_one_line(make, message, tmp_path, capsys):
    refused_by_every_command(make(tmp_path / "data"), message, tmp_path, capsys)
