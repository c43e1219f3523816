"""The web demo (app.py): its handlers, the running server, and its command line."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_config
from multimodal import GenerativeMultimodalModel
from multimodal.config import ServeConfig
from multimodal.data import generate_shapes_dataset
from multimodal.errors import InvalidInputError

gr = pytest.importorskip("gradio", reason="the web demo needs gradio (pip install -e '.[app]')")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from multimodal.app import Demo, build_page, launch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NUM_VAL = 12


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tiny_run(root: Path) -> Path:
    """A tiny checkpoint whose trainer state names a tiny shapes set, as train.py would."""
    data = generate_shapes_dataset(root / "shapes", num_train=2, num_val=NUM_VAL, image_size=28, progress=False)
    torch.manual_seed(0)
    checkpoint = root / "checkpoint"
    GenerativeMultimodalModel(tiny_config()).save_pretrained(checkpoint)
    state = {"train_config": {"preset": "shapes", "data_dir": str(data)}}
    (checkpoint / "trainer_state.json").write_text(json.dumps(state))
    return checkpoint


def bad_files(folder: Path) -> dict[str, Path]:
    """What visitors upload by mistake (or on purpose)."""
    folder.mkdir(exist_ok=True)
    (folder / "notes.png").write_text("not a picture at all")
    Image.new("RGB", (64, 64), "red").save(folder / "whole.png")
    (folder / "cut.png").write_bytes((folder / "whole.png").read_bytes()[:120])
    Image.new("L", (6000, 5000)).save(folder / "huge.png")  # 30 megapixels, a few kB of PNG
    return {name: folder / f"{name}.png" for name in ("notes", "cut", "huge")}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    config = ServeConfig(port=free_port())
    demo = Demo.load(tiny_run(root), config, device="cpu")
    page = build_page(demo)
    url = launch(page, config, block=False)
    yield demo, url, root
    page.close()


@pytest.fixture(scope="module")
def client(served) -> Client:
    return Client(served[1], verbose=False)


def t2i(client: Client, prompt: str, count: int = 1, candidates: int = 1, **kwargs):
    return client.predict(prompt, 2, 1.0, "ddim", 0, count, False, candidates, api_name="/text_to_image", **kwargs)


def test_it_listens_on_localhost_only_by_default(served):
    assert served[1].startswith("http://127.0.0.1:")
    assert ServeConfig().host == "127.0.0.1"


def test_nothing_calls_home(served):
    from gradio import analytics

    assert not analytics.analytics_enabled()  # no version check, no usage reports


def test_text_to_image_gives_pngs_of_the_model_size_reproducibly(client):
    first, second = t2i(client, "a large red circle on the left", count=2), t2i(client, "a large red circle on the left", count=2)
    assert len(first) == 2
    pictures = [Image.open(item["image"]) for item in first + second]
    assert all(picture.format == "PNG" and picture.size == (28, 28) for picture in pictures)
    assert np.array_equal(np.asarray(pictures[0]), np.asarray(pictures[2]))  # same seed, same pixels
    assert len(t2i(client, "a large red circle on the left", count=2, candidates=3)) == 2  # best of 3, twice


def test_image_to_text_writes_as_many_captions_as_asked(client, served):
    example = Path(served[0].validation.paths[0])
    captions = client.predict(handle_file(str(example)), "beams", 2, 3, 0.8, 0.9, 0, api_name="/image_to_text")
    assert len(captions.splitlines()) == 2 and all(line.strip() for line in captions.splitlines())
    sampled = client.predict(handle_file(str(example)), "sampling", 3, 3, 0.8, 0.9, 7, api_name="/image_to_text")
    assert len(sampled.splitlines()) == 3


def test_search_ranks_the_validation_images_and_captions(client, served):
    demo = served[0]
    found = client.predict("a large red circle on the left", api_name="/search_images")
    scores = [float(item["caption"].split(" · ")[0]) for item in found]
    assert len(found) == NUM_VAL and scores == sorted(scores, reverse=True)
    rows = client.predict(handle_file(demo.validation.paths[3]), api_name="/search_captions")["data"]
    assert [row[0] for row in rows] and all(row[0] in demo.validation.texts for row in rows)
    assert [row[1] for row in rows] == sorted((row[1] for row in rows), reverse=True)


@pytest.mark.parametrize("mistake, message", [
    ("empty prompt", "a prompt must not be empty"),
    ("endless prompt", "A prompt of at most 1000 characters"),
    ("not a picture", "not a picture that can be read"),
    ("cut short", "cut short"),
    ("huge", "6000×5000 pixels (30 megapixels); the limit is 25 megapixels"),
    ("greedy, three captions", "Greedy decoding writes one caption"),
    ("negative seed", "Value -3 is less than minimum value 0"),
])
def test_bad_input_is_a_message_in_the_page_and_the_next_request_works(client, served, mistake, message):
    files = bad_files(served[2] / "bad")
    good = served[0].validation.paths[0]
    calls = {
        "empty prompt": lambda: t2i(client, "   "),
        "endless prompt": lambda: t2i(client, "a red circle " * 10_000),
        "not a picture": lambda: client.predict(handle_file(str(files["notes"])), "greedy", 1, 3, 0.8, 0.9, 0,
                                                api_name="/image_to_text"),
        "cut short": lambda: client.predict(handle_file(str(files["cut"])), api_name="/search_captions"),
        "huge": lambda: client.predict(handle_file(str(files["huge"])), "greedy", 1, 3, 0.8, 0.9, 0,
                                       api_name="/image_to_text"),
        "greedy, three captions": lambda: client.predict(handle_file(good), "greedy", 3, 3, 0.8, 0.9, 0,
                                                         api_name="/image_to_text"),
        "negative seed": lambda: client.predict("a red circle", 2, 1.0, "ddim", -3, 1, False, 1,
                                                api_name="/text_to_image"),
    }
    with pytest.raises(AppError, match=re.escape(message)) as error:
        calls[mistake]()
    assert str(served[2]) not in str(error.value) and "/tmp/gradio" not in str(error.value)  # no server paths
    assert len(t2i(client, "a small blue square at the top")) == 1


def test_a_path_sent_by_a_visitor_is_never_read(served):
    url = served[1]
    data = [{"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}, "greedy", 1, 3, 0.8, 0.9, 0]
    event = httpx.post(f"{url}gradio_api/call/image_to_text", json={"data": data}).json()["event_id"]
    answer = httpx.get(f"{url}gradio_api/call/image_to_text/{event}").text
    assert "event: error" in answer and "root:" not in answer


def test_twenty_simultaneous_requests_all_complete(client):
    prompts = [f"a {size} {colour} circle" for size in ("small", "large") for colour in
               ("red", "green", "blue", "yellow", "purple", "orange", "white", "cyan", "pink", "grey")]
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda prompt: t2i(client, prompt), prompts))
    assert len(results) == 20 and all(len(images) == 1 for images in results)


def run_app(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "app.py"), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["--port", "0"], "--port must be in 1..65535, got 0"),
    (["--checkpoint", "{tmp}/nowhere"], "does not exist"),
    (["--data-dir", "{tmp}/nowhere"], "--data-dir {tmp}/nowhere is not a folder"),
    (["--max-images", "0"], "--max-images must be above 0"),
])
def test_bad_flags_are_one_line_and_exit_code_2(served, tmp_path, args, message):
    checkpoint = ["--checkpoint", str(served[2] / "checkpoint")] if "--checkpoint" not in args else []
    result = run_app(*checkpoint, *[a.format(tmp=tmp_path) for a in args])
    assert result.returncode == 2 and message.format(tmp=tmp_path) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_an_upload_over_the_size_cap_is_refused_by_the_server(served, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * int(ServeConfig().max_upload_mb * 1e6 + 1000))
    with big.open("rb") as file:
        answer = httpx.post(f"{served[1]}gradio_api/upload", files={"files": ("big.png", file, "image/png")})
    assert answer.status_code == 413 and "maximum" in answer.text.lower()


def test_search_reads_the_validation_split_in_the_layout_training_read(tmp_path):
    """A checkpoint trained on an image folder with its own caption column and validation
    fraction: the page's search set is that folder's validation split, read the same way."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rows = []
    for i in range(40):
        Image.new("RGB", (28, 28), (6 * i, 0, 0)).save(folder / f"p{i}.png")
        rows.append(json.dumps({"file_name": f"p{i}.png", "description": f"picture number {i}"}))
    (folder / "metadata.jsonl").write_text("\n".join(rows))
    checkpoint = tmp_path / "checkpoint"
    GenerativeMultimodalModel(tiny_config()).save_pretrained(checkpoint)
    options = {"data_format": "auto", "caption_column": "description", "image_column": "file_name", "val_fraction": 0.25}
    (checkpoint / "trainer_state.json").write_text(json.dumps({"train_config": {"data_dir": str(folder)} | options}))
    demo = Demo.load(checkpoint, ServeConfig(), device="cpu")
    texts = demo.validation.texts
    assert 3 <= len(texts) < 40 and all(re.fullmatch(r"picture number \d+", text) for text in texts)
    assert {Path(path).name for path in demo.validation.paths} == {f"p{text.split()[-1]}.png" for text in texts}


def test_the_page_refuses_an_unconditional_checkpoint_in_one_line(tmp_path):
    GenerativeMultimodalModel(tiny_config().without_captions()).save_pretrained(tmp_path / "unconditional")
    with pytest.raises(InvalidInputError, match="the web demo needs a model trained on captions; this checkpoint is unconditional"):
        Demo.load(tmp_path / "unconditional", ServeConfig(), device="cpu")
