"""Parquet and Arrow data sets as the Hub stores them, written here with pyarrow alone."""

from __future__ import annotations

import io
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from conftest import COCO_MINI
from multimodal.data import open_split, read_layout
from multimodal.data.__main__ import main as data_main
from multimodal.data.parquet_source import ParquetSource, _ParquetTable
from multimodal.data.coco import read_coco
from multimodal.errors import DatasetLayoutError

IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # the `datasets` Image feature


def coco_as_parquet(root, split: str, out, rows_per_group: int = 16) -> dict[int, list[str]]:
    """A COCO split as one parquet file of the Hub's layout: image {bytes, path}, text, image_id."""
    records, _ = read_coco(root, split)
    table = pa.table({
        "image": pa.array([{"bytes": open(p, "rb").read(), "path": None} for p in records.paths], IMAGE),
        "text": records.captions,
        "image_id": records.image_ids,
    })
    name = "validation" if split == "val" else split
    (out / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out / "data" / f"{name}-00000-of-00001.parquet", row_group_size=rows_per_group)
    return dict(zip(records.image_ids, records.captions))


@pytest.mark.skipif(not COCO_MINI.is_dir(), reason="../shared/coco-mini is not present")
def test_coco_mini_as_parquet_gives_the_coco_loaders_pairs(tmp_path):
    captions = {split: coco_as_parquet(COCO_MINI, split, tmp_path) for split in ("train", "val")}
    coco = open_split(COCO_MINI, "val", 32)
    parquet = open_split(tmp_path, "val", 32)
    assert isinstance(parquet, ParquetSource) and len(parquet) == len(coco) == len(captions["val"])
    assert parquet.references == captions["val"]
    pixels = {item["image_id"]: item["image"] for item in (coco[i] for i in range(len(coco)))}
    for item in parquet:
        torch.testing.assert_close(item["image"], pixels[item["image_id"]], rtol=0, atol=0)
        assert item["caption"] in captions["val"][item["image_id"]]
    train = open_split(tmp_path, "train", 32)
    assert len(train) == len(captions["train"]) and len(train.groups) == -(-len(captions["train"]) // 16)
    assert sorted(item["image_id"] for item in train) == sorted(captions["train"])


def picture(colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 12), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_flat_folder_holds_out_rows_reads_paths_and_arrow_and_names_a_missing_column(tmp_path):
    (tmp_path / "red.png").write_bytes(picture("red"))
    rows = {"picture": [picture("blue"), picture("green")] * 10, "caption": [f"shape {i}" for i in range(20)]}
    pq.write_table(pa.table(rows), tmp_path / "part-0.parquet")
    with pa.OSFile(str(tmp_path / "part-1.arrow"), "wb") as sink, \
            pa.ipc.new_stream(sink, pa.schema([("picture", IMAGE), ("caption", pa.list_(pa.string()))])) as writer:
        writer.write_table(pa.table({"picture": pa.array([{"bytes": None, "path": "red.png"}], IMAGE),
                                     "caption": [["a red one", "red"]]}))
    options = dict(image_size=16, image_column="picture", caption_column="caption", val_fraction=0.2)
    train, val = (ParquetSource(str(tmp_path), split, **options) for split in ("train", "val"))
    assert len(train) + len(val) == 21 and 0 < len(val) < 21
    seen = list(train) + list(val)
    assert len({item["image_id"] for item in seen}) == 21
    red = next(item for item in seen if item["caption"] in ("a red one", "red"))
    assert red["image"][0].mean() > 0.9 and red["image"][2].mean() < -0.9
    with pytest.raises(DatasetLayoutError, match=r"part-0.parquet has no column 'text'; its columns are picture, "
                                                 r"caption \(choose with --caption-column\)"):
        ParquetSource(str(tmp_path), image_column="picture")


def test_convert_to_parquet_writes_the_hubs_layout_that_reads_back_as_the_source(shapes_dir, tmp_path, capsys):
    out = tmp_path / "parquet"
    assert data_main(["convert", str(shapes_dir), str(out), "--to", "parquet", "--shard-size", "10"]) == 0
    assert sorted(p.name for p in (out / "data").iterdir()) == [
        "train-00000-of-00003.parquet", "train-00001-of-00003.parquet", "train-00002-of-00003.parquet",
        "validation-00000-of-00001.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parquet"]  # no DST.partial left
    written = pq.read_table(out / "data" / "validation-00000-of-00001.parquet")
    assert written.schema.field("image").type == IMAGE
    assert [cell["path"] for cell in written.column("image").to_pylist()] == [None] * 8
    assert written.schema.field("text").type == pa.list_(pa.string())
    for split in ("train", "val"):
        records = read_layout(shapes_dir).splits[split]
        source, back = open_split(shapes_dir, split, 28), open_split(out, split, 28)
        captions = dict(zip(records.image_ids, records.captions))
        pixels = {item["image_id"]: item["image"] for item in (source[i] for i in range(len(source)))}
        items = list(back)
        assert isinstance(back, ParquetSource) and sorted(i["image_id"] for i in items) == sorted(captions)
        for item in items:
            torch.testing.assert_close(item["image"], pixels[item["image_id"]], rtol=0, atol=0)
            assert item["caption"] in captions[item["image_id"]]
    assert back.references == captions  # every caption, as a list, under the source's ids
    capsys.readouterr()
    assert data_main(["check", str(out)]) == 0
    out_text = capsys.readouterr().out
    assert "parquet layout (detected)" in out_text and "it would train" in out_text
    assert "train: 24 images, 96 captions (4–4 per image, mean 4.0), from 24 rows in 3 files" in out_text


def test_check_lists_rows_without_caption_and_unreadable_images_a_row_group_at_a_time(tmp_path, capsys, monkeypatch):
    rows = {"image": [picture("red"), picture("blue"), b"not an image", None, picture("green")] * 2,
            "text": [["red"], None, ["garbage"], ["no image"], ["green", "lime"]] * 2}
    pq.write_table(pa.table(rows), tmp_path / "train.parquet", row_group_size=5)
    pq.write_table(pa.table({"image": [picture("red")], "text": ["red"]}), tmp_path / "test.parquet")
    (tmp_path / "train").mkdir(), (tmp_path / "validation").mkdir()
    (tmp_path / "train.parquet").rename(tmp_path / "train" / "part.parquet")
    (tmp_path / "test.parquet").rename(tmp_path / "validation" / "part.parquet")
    read = []
    original = _ParquetTable.group
    monkeypatch.setattr(_ParquetTable, "group", lambda self, *a: read.append(original(self, *a).num_rows) or
                        original(self, *a))
    assert data_main(["check", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    part = tmp_path / "train" / "part.parquet"
    for line in (f"warning: {part}: row 1: no caption in column 'text'",
                 f"warning: {part}: row 2: unreadable image (not an image file PIL can identify)",
                 f"warning: {part}: row 3: no image (the image cell is empty)",
                 f"warning: {part}: row 7: unreadable image", f"warning: {part}: row 8: no image",
                 "train: 4 images, 6 captions (1–2 per image, mean 1.5), from 10 rows in 1 file",
                 "val: 1 images, 1 captions (1–1 per image, mean 1.0), from 1 rows in 1 file",
                 "6 problems (0 stop training", "it would train"):
        assert line in out, out
    assert max(read) == 5  # one row group in memory at a time, never the whole file
    assert data_main(["check", str(tmp_path), "--no-open-images"]) == 0
    out = capsys.readouterr().out
    assert "train: 8 images" in out and "unreadable image" not in out and "no image" not in out  # none read


BAD_IDS = [pa.array([1, None, 3], pa.int64()), pa.array([1.0, 2.5, 3.0]), pa.array(["a", "b", "c"]),
           pa.nulls(3)]


@pytest.mark.parametrize("ids, holds", zip(BAD_IDS, ["1 null", "floats", "text", "only nulls"]),
                         ids=["nulls", "floats", "strings", "all-null"])
def test_an_image_id_column_that_is_not_integers_is_refused_in_one_line_everywhere(ids, holds, tmp_path, capsys):
    data = tmp_path / "data" / "data"
    data.mkdir(parents=True)
    good = {"image": [picture("red")] * 3, "text": ["a", "b", "c"], "image_id": [1, 2, 3]}
    pq.write_table(pa.table(good), data / "train-00000-of-00001.parquet")
    bad = data / "validation-00000-of-00001.parquet"
    pq.write_table(pa.table(good | {"image_id": ids}), bad)
    message = f"{bad}: column 'image_id' holds {holds}, not an integer in every row"
    with pytest.raises(DatasetLayoutError, match=re.escape(message)):
        ParquetSource(str(tmp_path / "data"), "val")
    assert data_main(["check", str(tmp_path / "data")]) == 2
    assert message in capsys.readouterr().out
    # convert writes train, then meets the bad file: it leaves nothing behind
    assert data_main(["convert", str(tmp_path / "data"), str(tmp_path / "out"), "--to", "parquet"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_options_that_need_a_set_read_up_front_name_parquet_files(tmp_path):
    from multimodal.config import TrainConfig
    from multimodal.errors import TrainingError
    from multimodal.training.trainer import add_lora, with_replay

    pq.write_table(pa.table({"image": [picture("red")] * 2, "text": ["red", "crimson"]}), tmp_path / "a.parquet")
    train_set = open_split(tmp_path, "train", 16)
    with pytest.raises(TrainingError, match="WebDataset shards and parquet files are streamed"):
        with_replay(train_set, TrainConfig(), 16)
    with pytest.raises(TrainingError, match="WebDataset shards and parquet files stream them"):
        add_lora(None, TrainConfig(), train_set)
