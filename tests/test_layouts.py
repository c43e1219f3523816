"""Every dataset layout: detected, read into the same (image, caption) pairs as the COCO loader,
trained on end to end, checked (every malformed case: one line naming the file, exit code 2),
converted both ways, and WebDataset shards split so that no sample repeats in an epoch."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import COCO_MINI, REPO, TINY_FLAGS, free_port, run_in_process, script_main, tiny_config, train_in_process
from multimodal.config import TrainConfig
from multimodal.data import detect_layout, open_split, read_layout
from multimodal.data.__main__ import main as data_main
from multimodal.data.convert import convert
from multimodal.data.layouts import hold_out
from multimodal.data.webdataset_source import CAPTION_KEYS, IMAGE_KEYS, captions_of, sample_id, scan_shard, shard_lists
from multimodal.training import Trainer

LAYOUTS = ("coco", "imagefolder", "paired", "captions-txt", "webdataset")


def synthetic_coco(root: Path, train: int = 12, val: int = 4) -> Path:
    """A tiny COCO-layout set: coloured 32×32 images with two captions each (one image three)."""
    (root / "annotations").mkdir(parents=True)
    image_id = 0
    for split, count in (("train", train), ("val", val)):
        (root / f"{split}2017").mkdir()
        images, annotations = [], []
        for _ in range(count):
            image_id += 1
            name = f"{image_id:012d}.jpg"
            Image.new("RGB", (32, 32), (image_id * 20 % 256, 40, 90)).save(root / f"{split}2017" / name)
            images.append({"id": image_id, "file_name": name, "width": 32, "height": 32})
            captions = [f"picture {image_id}", f"image number {image_id}"] + (["a third one"] if image_id == 2 else [])
            annotations += [{"id": image_id * 10 + k, "image_id": image_id, "caption": c} for k, c in enumerate(captions)]
        data = {"images": images, "annotations": annotations}
        (root / "annotations" / f"captions_{split}2017.json").write_text(json.dumps(data))
    return root


def one_line(caption: str) -> str:
    """What a layout of one caption per line can hold (a few COCO captions have a line break)."""
    return caption.replace("\n", " ")


def write_paired(source: Path, root: Path) -> Path:
    for split, folder in (("train", "train"), ("val", "val")):
        records = read_layout(source).splits[split]
        (root / folder).mkdir(parents=True)
        for path, captions in zip(records.paths, records.captions):
            (root / folder / Path(path).name).write_bytes(Path(path).read_bytes())
            (root / folder / Path(path).name).with_suffix(".txt").write_text("\n".join(map(one_line, captions)) + "\n")
    return root


def write_captions_txt(source: Path, root: Path) -> Path:
    """images/1.jpg … with captions.txt: one caption an image (the first), no splits."""
    (root / "images").mkdir(parents=True)
    lines = []
    for split in ("train", "val"):
        records = read_layout(source).splits[split]
        for path, captions in zip(records.paths, records.captions):
            lines.append(one_line(captions[0]))
            (root / "images" / f"{len(lines)}.jpg").write_bytes(Path(path).read_bytes())
    (root / "captions.txt").write_text("\n".join(lines) + "\n")
    return root


def make_layout(layout: str, source: Path, root: Path) -> Path:
    if layout == "coco":
        return source
    if layout in ("imagefolder", "webdataset"):
        convert(str(source), root, layout, shard_size=3)
        return root
    return (write_paired if layout == "paired" else write_captions_txt)(source, root)


def contents(data_dir: Path, split: str) -> list[tuple[str, tuple[str, ...]]]:
    """(sha1 of the image file, its captions) of every image of a split, sorted."""
    def digest(data: bytes) -> str:
        return hashlib.sha1(data).hexdigest()

    if detect_layout(data_dir) == "webdataset":
        train, val = shard_lists(str(data_dir))
        found = []
        for shard in (train if split == "train" else val):
            for files in scan_shard(shard, read=CAPTION_KEYS + IMAGE_KEYS).values():
                image = next(k for k in IMAGE_KEYS if k in files)
                found.append((digest(files[image]), tuple(captions_of(files, "text"))))
        return sorted(found)
    records = read_layout(data_dir).splits[split]
    return sorted((digest(Path(p).read_bytes()), tuple(c)) for p, c in zip(records.paths, records.captions))


@pytest.fixture(scope="module", params=["synthetic", "coco-mini"])
def source(request, tmp_path_factory) -> Path:
    """The synthetic set (always), and the real COCO sample where present."""
    if request.param == "coco-mini":
        if not COCO_MINI.is_dir():
            pytest.skip("../shared/coco-mini is not present")
        return COCO_MINI
    return synthetic_coco(tmp_path_factory.mktemp("synthetic") / "coco")


@pytest.fixture(scope="module")
def layouts(source, tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("layouts")
    return {layout: make_layout(layout, source, base / layout) for layout in LAYOUTS}


@pytest.fixture(scope="module")
def small_layouts(tmp_path_factory) -> dict[str, Path]:
    """The synthetic set in every layout: what training runs on (seconds, where coco-mini's
    79 validation photos take a minute per run on a busy 2-core CPU)."""
    base = tmp_path_factory.mktemp("small")
    source = synthetic_coco(base / "coco")
    return {layout: make_layout(layout, source, base / layout) for layout in LAYOUTS}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_is_detected_and_gives_the_coco_loaders_pairs(layout, layouts, source):
    data_dir = layouts[layout]
    assert detect_layout(data_dir) == layout
    if layout == "captions-txt":  # one caption an image, and a held-out validation split
        everything = contents(data_dir, "train") + contents(data_dir, "val")
        expected = [(image, (one_line(captions[0]),)) for split in ("train", "val")
                    for image, captions in contents(source, split)]
        assert sorted(everything) == sorted(expected)
        assert len(contents(data_dir, "val")) >= 1
    else:
        for split in ("train", "val"):
            expected = contents(source, split)
            if layout == "paired":
                expected = [(image, tuple(map(one_line, captions))) for image, captions in expected]
            assert contents(data_dir, split) == expected, split


def test_the_samples_are_those_pairs(layouts):
    """What the training loop gets: each layout's dataset yields images at the model's size
    with one of the image's captions."""
    for layout, data_dir in layouts.items():
        dataset = open_split(data_dir, "val", 28)
        references = {caption for captions in read_layout(layouts["coco"]).splits["val"].captions for caption in captions}
        samples = list(dataset) if layout == "webdataset" else [dataset[i] for i in range(len(dataset))]
        assert len(samples) == len(dataset) > 0, layout
        assert all(s["image"].shape == (3, 28, 28) for s in samples), layout
        if layout != "captions-txt":
            assert {s["caption"] for s in samples} <= references, layout


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_trains_three_steps(layout, small_layouts, tmp_path):
    values = dict(data_dir=str(small_layouts[layout]), output_dir=str(tmp_path), max_steps=3, batch_size=2,
                  num_workers=0, sample_every_epoch=False, warmup_epochs=0)
    trainer = Trainer(tiny_config(freeze_bert=True), TrainConfig(**values))
    trainer.run()
    assert trainer.step == 3
    assert (tmp_path / "latest" / "model.safetensors").is_file()


def test_train_py_on_paired_files(small_layouts, tmp_path):
    result = train_in_process("--data-dir", str(small_layouts["paired"]), "--output-dir", str(tmp_path), "--max-steps",
                              "3", "--batch-size", "2", "--no-sample-every-epoch", *TINY_FLAGS)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "latest" / "model.safetensors").is_file()


def test_convert_round_trips(layouts, source, tmp_path):
    back = tmp_path / "back"
    assert data_main(["convert", str(layouts["webdataset"]), str(back), "--to", "imagefolder"]) == 0
    again = tmp_path / "again"
    assert data_main(["convert", str(back), str(again), "--to", "webdataset", "--shard-size", "2"]) == 0
    for split in ("train", "val"):
        assert contents(back, split) == contents(again, split) == contents(source, split)
    assert not (tmp_path / "back.partial").exists()


def test_convert_refuses_an_existing_destination(small_layouts, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    assert data_main(["convert", str(small_layouts["paired"]), str(tmp_path / "taken"), "--to", "imagefolder"]) == 2
    err = capsys.readouterr().err.strip()
    assert "already exists" in err and len(err.splitlines()) == 1


def test_check_reports_layout_counts_and_lengths(small_layouts, capsys):
    assert data_main(["check", str(small_layouts["imagefolder"])]) == 0
    out = capsys.readouterr().out
    assert "imagefolder layout (detected)" in out and "caption length in tokens: min" in out
    assert "it would train" in out


# ----------------------------------------------------------------------- malformed input
def image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), (200, 0, 0)).save(path)
    return path


def metadata(root: Path, *lines: str) -> Path:
    for name in ("a.jpg", "b.jpg"):
        image(root / name)
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


def bad_json_line(root: Path) -> Path:
    return metadata(root, '{"file_name": "a.jpg", "text": "red"}', '{"file_name": "b.jpg", "text": "blue"')


def missing_column(root: Path) -> Path:
    return metadata(root, '{"file_name": "a.jpg", "caption": "red"}', '{"file_name": "b.jpg", "caption": "blue"}')


def empty_caption(root: Path) -> Path:
    return metadata(root, '{"file_name": "a.jpg", "text": "red"}', '{"file_name": "b.jpg", "text": "  "}')


def caption_not_text(root: Path) -> Path:
    return metadata(root, '{"file_name": "a.jpg", "text": "red"}', '{"file_name": "b.jpg", "text": 3}')


def bad_csv_column(root: Path) -> Path:
    for name in ("a.jpg", "b.jpg"):
        image(root / name)
    (root / "metadata.csv").write_text("image,text\na.jpg,red\nb.jpg,blue\n")
    return root


def empty_paired_file(root: Path) -> Path:
    image(root / "a.jpg"), image(root / "b.jpg")
    (root / "a.txt").write_text("red\n")
    (root / "b.txt").write_text("\n \n")
    return root


def empty_captions_txt_line(root: Path) -> Path:
    image(root / "images" / "1.jpg"), image(root / "images" / "2.jpg")
    (root / "captions.txt").write_text("red\n\n")
    return root


def shards_without_caption_key(root: Path) -> Path:
    import webdataset as wds

    root.mkdir()
    with wds.TarWriter(str(root / "000000.tar")) as writer:
        for key in ("a", "b"):
            writer.write({"__key__": key, "jpg": image(root.parent / f"{key}.jpg").read_bytes(),
                          "json": {"caption": "red"}})
    return root


def no_layout(root: Path) -> Path:
    (root / "notes").mkdir(parents=True)
    (root / "readme.md").write_text("hello")
    return root


MALFORMED = [
    (bad_json_line, "metadata.jsonl:2: not a JSON line"),
    (missing_column, "metadata.jsonl:1: no column 'text'; the columns are 'file_name', 'caption'"),
    (empty_caption, "metadata.jsonl:2: empty caption in column 'text' for b.jpg"),
    (caption_not_text, "metadata.jsonl:2: a caption must be text or a list of texts, got 3"),
    (bad_csv_column, "metadata.csv:2: no column 'file_name'; the columns are 'image', 'text' (choose another with --image-column)"),
    (empty_paired_file, "b.txt: empty caption file"),
    (empty_captions_txt_line, "captions.txt:2: empty caption (for image 2)"),
    (shards_without_caption_key, "000000.tar: sample a: .json has no key 'text'; its keys are 'caption'"),
    (no_layout, "holds no dataset layout this reads"),
]


@pytest.mark.parametrize("make, message", MALFORMED, ids=[make.__name__ for make, _ in MALFORMED])
def test_check_lists_every_malformed_case_and_exits_2(make, message, tmp_path, capsys):
    data_dir = make(tmp_path / "data")
    assert data_main(["check", str(data_dir)]) == 2
    out = capsys.readouterr().out
    assert message in out
    assert "it would not train" in out


@pytest.mark.parametrize("make, message", [MALFORMED[0], MALFORMED[1], MALFORMED[6]], ids=["json", "column", "txt"])
def test_train_py_stops_on_malformed_data_with_one_line(make, message, tmp_path):
    data_dir = make(tmp_path / "data")
    result = train_in_process("--data-dir", str(data_dir), "--output-dir", str(tmp_path / "out"), *TINY_FLAGS)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_options_that_cannot_apply_to_shards_are_refused(small_layouts):
    from multimodal.errors import DatasetLayoutError

    with pytest.raises(DatasetLayoutError, match="--cache-images cannot apply to streamed WebDataset shards"):
        open_split(small_layouts["webdataset"], "train", 28, cache_images=True)


def test_problems_that_leave_images_out_are_listed_but_train(tmp_path, capsys):
    root = tmp_path / "data"
    metadata(root / "train", '{"file_name": "a.jpg", "text": ["red", "red"]}', '{"file_name": "gone.jpg", "text": "x"}',
             '{"file_name": "b.jpg", "text": "blue"}', '{"file_name": "c.jpg", "text": "green"}')
    metadata(root / "validation", '{"file_name": "a.jpg", "text": "red"}')
    image(root / "train" / "lonely.jpg")
    (root / "train" / "c.jpg").write_bytes(b"not an image")
    assert data_main(["check", str(root)]) == 0
    out = capsys.readouterr().out
    for message in ("metadata.jsonl:1: duplicate caption for a.jpg: 'red'", "image gone.jpg not found",
                    "lonely.jpg: image without caption", "c.jpg: unreadable image"):
        assert message in out
    with pytest.warns(UserWarning, match="problems in .* left out of training"):
        assert len(open_split(root, "train", 28)) == 3  # c.jpg is found unreadable when read, as in COCO


def test_bad_flag_values_are_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        data_main(["check", str(tmp_path), "--val-fraction", "0"])
    assert exit_.value.code == 2
    assert "--val-fraction must be in (0, 1), got 0.0" in capsys.readouterr().err


def test_columns_and_csv_lists_and_split_folders(tmp_path):
    root = tmp_path / "data"
    for split in ("train", "validation"):
        image(root / split / "a.jpg"), image(root / split / "b.jpg")
        (root / split / "metadata.csv").write_text(
            'picture,words\na.jpg,"[""red"", ""crimson""]"\nb.jpg,blue\nb.jpg,navy\n')
    layout = read_layout(root, caption_column="words", image_column="picture")
    assert not layout.problems and not layout.held_out
    for split in ("train", "val"):
        assert layout.splits[split].captions == [["red", "crimson"], ["blue", "navy"]]


def test_held_out_split_is_fixed_by_file_names(tmp_path):
    records = read_layout(write_captions_txt(synthetic_coco(tmp_path / "coco", 30, 10), tmp_path / "ct")).splits
    assert len(records["val"].paths) >= 1
    from multimodal.data.caption_dataset import CaptionRecords

    everything = CaptionRecords()
    for split in ("train", "val"):
        for path, captions in zip(records[split].paths, records[split].captions):
            everything.add(path, captions)
    train, val = hold_out(everything, tmp_path / "ct", 0.05)
    assert val.paths == records["val"].paths  # the same files every time
    train, val = hold_out(everything, tmp_path / "ct", 0.5)
    assert 8 <= len(val.paths) <= 32 and not set(val.paths) & set(train.paths)


# ----------------------------------------------------------------------- WebDataset at scale
SEEN_SCRIPT = """
import json, os, sys
import torch
from multimodal.data.webdataset_source import WebDatasetSource
torch.distributed.init_process_group("gloo")
source = WebDatasetSource(sys.argv[1], "train", 16, val_fraction=0.2)
source.set_epoch(int(sys.argv[3]))
loader = torch.utils.data.DataLoader(source, batch_size=1, num_workers=2)
ids = [int(batch["image_id"][0]) for batch in loader]
out = os.path.join(sys.argv[2], f"rank{os.environ['RANK']}-epoch{sys.argv[3]}.json")
json.dump({"ids": ids, "len": len(source)}, open(out, "w"))
torch.distributed.destroy_process_group()
"""


def test_torchrun_two_processes_over_four_shards_see_each_sample_once(tmp_path):
    shards = tmp_path / "shards"
    convert(str(synthetic_coco(tmp_path / "coco", 16, 0 + 1)), tmp_path / "wds", "webdataset", shard_size=4)
    (tmp_path / "wds" / "train").rename(shards)  # 4 shards of 4, no validation folder: 20% held out by key
    assert len(list(shards.glob("*.tar"))) == 4
    script = tmp_path / "seen.py"
    script.write_text(SEEN_SCRIPT)
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for epoch in (0, 1):
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                   str(free_port()), str(script), str(shards), str(tmp_path), str(epoch)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
    expected = {sample_id(key) for shard in sorted(shards.glob("*.tar")) for key in scan_shard(str(shard))}
    held = {sample_id(key) for key in [k for s in shards.glob("*.tar") for k in scan_shard(str(s))]
            if __import__("multimodal.data.layouts", fromlist=["x"]).is_held_out(key, 0.2)}
    for epoch in (0, 1):
        seen = [json.loads((tmp_path / f"rank{r}-epoch{epoch}.json").read_text()) for r in (0, 1)]
        ids = seen[0]["ids"] + seen[1]["ids"]
        assert len(ids) == len(set(ids))  # no sample twice in an epoch
        assert set(ids) == expected - held  # and every training sample once
        assert not set(seen[0]["ids"]) & set(seen[1]["ids"])
    orders = [json.loads((tmp_path / f"rank0-epoch{e}.json").read_text())["ids"] for e in (0, 1)]
    assert orders[0] != orders[1]  # each epoch shuffles anew


def test_streamed_run_resumes_without_repeating_samples(small_layouts, tmp_path, monkeypatch):
    """Stopped mid-epoch and resumed, a streamed run trains on the batches it had not yet seen."""
    seen: list[list[int]] = []
    original = Trainer.train_step

    def record(self, batches):
        seen.append([i for batch in batches for i in batch["image_ids"]])
        return original(self, batches)

    monkeypatch.setattr(Trainer, "train_step", record)
    values = dict(data_dir=str(small_layouts["webdataset"]), batch_size=2, num_workers=0, sample_every_epoch=False,
                  warmup_epochs=0, epochs=1)
    whole = Trainer(tiny_config(freeze_bert=True), TrainConfig(output_dir=str(tmp_path / "a"), max_steps=4, **values))
    whole.run()
    uninterrupted, seen[:] = list(seen), []
    Trainer(tiny_config(freeze_bert=True), TrainConfig(output_dir=str(tmp_path / "b"), max_steps=2, **values)).run()
    resumed = Trainer(tiny_config(freeze_bert=True), TrainConfig(output_dir=str(tmp_path / "b"), max_steps=4, **values),
                      resume=True)
    resumed.run()
    assert seen == uninterrupted and len(seen) == 4


@pytest.mark.parametrize("layout", ["imagefolder", "webdataset"])
def test_evaluate_py_scores_every_layout_against_all_captions(layout, small_layouts, tmp_path):
    from multimodal import GenerativeMultimodalModel

    torch.manual_seed(0)
    GenerativeMultimodalModel(tiny_config()).save_pretrained(tmp_path / "checkpoint")
    output = tmp_path / "evaluation.json"
    result = run_in_process(
        script_main("evaluate.py"), "--checkpoint", str(tmp_path / "checkpoint"),
        "--data-dir", str(small_layouts[layout]), "--limit", "3", "--batch-size", "2", "--device", "cpu",
        "--output", str(output), cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    results = json.loads(output.read_text())
    assert results["dataset"] == layout
    # 3 images; the synthetic set gives each two captions, all of which are the references
    assert results["metrics"]["images"] == 3 and results["metrics"]["captions"] == 6


def test_convert_of_a_broken_source_leaves_nothing_behind(tmp_path, capsys):
    assert data_main(["convert", str(bad_json_line(tmp_path / "data")), str(tmp_path / "out"), "--to", "webdataset"]) == 2
    err = capsys.readouterr().err.strip()
    assert "metadata.jsonl:2: not a JSON line" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_torchrun_trains_on_shards_with_loader_workers(small_layouts, tmp_path):
    """Every process gets full, equal batches (the contrastive loss gathers them), however the
    shards divide among processes and workers, and none runs out before the others."""
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), str(REPO / "train.py"), "--data-dir", str(small_layouts["webdataset"]),
               "--output-dir", str(tmp_path), "--batch-size", "2", "--num-workers", "2", "--epochs", "2",
               "--no-sample-every-epoch", "--device", "cpu", *[f for f in TINY_FLAGS if f not in ("--num-workers", "0")]]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "× 2 processes" in result.stdout and "(2 per epoch" in result.stdout  # (6 - 2 workers × 1) // 2
    assert json.loads((tmp_path / "latest" / "trainer_state.json").read_text())["step"] == 4
