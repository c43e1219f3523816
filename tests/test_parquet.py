"""Parquet and Arrow data sets as the Hub stores them, written here with pyarrow alone."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from conftest import COCO_MINI
from multimodal.data import open_split
from multimodal.data.parquet_source import ParquetSource
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
