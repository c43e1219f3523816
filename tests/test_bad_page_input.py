"""Bad input sent to the page by hand (its API, not its browser) and to evaluate.py's outputs:
each is one message naming what is wrong, no traceback in the server's log, nothing fetched,
nothing read outside the uploads, nothing evaluated before a result that cannot be written."""

from __future__ import annotations

import json
import logging
import os

import httpx
import pytest

pytest.importorskip("gradio", reason="the web demo needs gradio (pip install -e '.[app]')")
import gradio.processing_utils  # noqa: E402
import gradio.utils  # noqa: E402

from multimodal.app import NOT_FETCHED, NOT_UPLOADED  # noqa: E402
from test_app import served  # noqa: E402,F401  (the running app on a tiny checkpoint)
from conftest import script_main  # noqa: E402
from test_reliability import exits_with_one_line  # noqa: E402

FILE = {"_type": "gradio.FileData"}  # what marks a file entry in gradio's JSON


def answer(url: str, api: str, data: list) -> tuple[str, dict | list]:
    """One call of the page's API, sent as JSON that may hold NaN and Infinity (Python's json
    writes and the server reads them, as curl or a script would send them): its event and data."""
    body = json.dumps({"data": data})
    sent = httpx.post(f"{url}gradio_api/call/{api}", content=body, headers={"content-type": "application/json"})
    lines = httpx.get(f"{url}gradio_api/call/{api}/{sent.json()['event_id']}", timeout=120).text.splitlines()
    event = next(line.split(": ", 1)[1] for line in lines if line.startswith("event: "))
    return event, json.loads(next(line.split(": ", 1)[1] for line in lines if line.startswith("data: ")))


def refused(url: str, api: str, data: list) -> str:
    event, data = answer(url, api, data)
    assert event == "error", data
    return data["error"]


def text_to_image(**changed) -> list:
    values = dict(prompt="a red circle", steps=2, guidance=1.0, sampler="ddim", seed=0, count=1, preview=False,
                  candidates=1, negative="") | changed
    return list(values.values())


def image_to_text(**changed) -> list:
    values = dict(image=None, decoding="sampling", count=1, beams=3, temperature=0.8, top_p=0.9, seed=0) | changed
    return list(values.values())


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("api, data, message", [
    ("text_to_image", text_to_image(seed=1e30), "Value 1e+30 is greater than maximum value 9223372036854775807"),
    ("text_to_image", text_to_image(seed=NAN), "Seed must be a finite number, got nan"),
    ("text_to_image", text_to_image(seed=INF), "Seed must be a finite number, got inf"),
    ("text_to_image", text_to_image(steps=NAN), "Steps must be a finite number, got nan"),
    ("text_to_image", text_to_image(steps="NaN"), "Steps must be a finite number, got 'NaN'"),
    ("text_to_image", text_to_image(count=NAN), "Images must be a finite number, got nan"),
    ("text_to_image", text_to_image(candidates=NAN), "Best of must be a finite number, got nan"),
    ("text_to_image", text_to_image(guidance=INF), "Guidance must be a finite number, got inf"),
    ("text_to_image", text_to_image(guidance=NAN), "Guidance must be a finite number, got nan"),
    ("image_to_text", image_to_text(count=NAN), "Captions must be a finite number, got nan"),
    ("image_to_text", image_to_text(decoding="beams", beams=NAN), "Beams must be a finite number, got nan"),
    ("image_to_text", image_to_text(temperature=NAN), "Temperature must be a finite number, got nan"),
    ("image_to_text", image_to_text(top_p=-INF), "Top-p must be a finite number, got -inf"),
    ("image_to_text", image_to_text(seed=1e30), "Value 1e+30 is greater than maximum value 9223372036854775807"),
])
def test_a_number_that_is_none_or_too_big_is_a_message_naming_its_box(served, capfd, api, data, message):
    assert message in refused(served[1], api, data)
    assert "Traceback" not in capfd.readouterr().err


NINE = "text_to_image takes 9 values (Prompt, Steps, Guidance, Sampler, Seed, Images, Fast preview, Best of, Negative prompt)"


@pytest.mark.parametrize("api, data, message", [
    ("text_to_image", text_to_image(prompt=None), "Prompt must be text, got None."),
    ("text_to_image", text_to_image(prompt=["a red circle"]), "Prompt must be text, got ['a red circle']."),
    ("text_to_image", text_to_image(negative=7), "Negative prompt must be text, got 7."),
    ("search_images", [None], "Find validation images like this text must be text, got None."),
    ("text_to_image", ["a red circle", 2, 1.0], f"{NINE}, got 3."),
    ("text_to_image", [*text_to_image(), "extra"], f"{NINE}, got 10."),
])
def test_a_prompt_that_is_no_text_or_a_call_with_the_wrong_number_of_values_is_a_message(
    served, capfd, api, data, message
):
    assert refused(served[1], api, data) == message
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("picture", [
    {"path": "https://example.invalid/cat.png", "meta": FILE},
    {"path": "http://127.0.0.1:9/cat.png", "meta": FILE},
    {"path": "https://example.invalid/cat.png"},  # no file mark: gradio leaves it to the component
])
def test_an_address_sent_as_a_picture_is_refused_and_never_fetched(served, monkeypatch, caplog, picture):
    fetched = []

    def download(url, *args, **kwargs):
        fetched.append(url)
        raise OSError("the test forbids downloads")

    async def download_async(url, *args, **kwargs):
        return download(url)

    monkeypatch.setattr(gradio.processing_utils, "async_ssrf_protected_download", download_async)
    monkeypatch.setattr(gradio.processing_utils, "ssrf_protected_download", download)
    monkeypatch.setattr(gradio.processing_utils, "unsafe_download", download)
    with caplog.at_level(logging.WARNING, logger="multimodal.app"):
        assert refused(served[1], "image_to_text", image_to_text(image=picture)) == NOT_FETCHED
    assert fetched == []
    assert [record.getMessage() for record in caplog.records if record.name == "multimodal.app"] == [
        f"multimodal.app: refused an address sent as a picture: {picture['path']}"]


def test_a_server_path_sent_as_a_picture_is_refused_never_read_and_one_line_in_the_log(served, capfd, caplog):
    demo, url, root = served
    picture = demo.validation.paths[0]  # a real picture on the server, outside the page's uploads
    sent = [
        {"path": "/etc/passwd", "meta": FILE},
        {"path": picture},  # without the file mark gradio checks nothing: it reached the handler
        {"path": f"{gradio.utils.get_upload_folder()}/../../{picture}"},
        {"path": "data:image/png;base64,iVBORw0KGgo=", "meta": FILE},
        {"url": "/etc/passwd", "path": "/etc/passwd", "meta": FILE},
        str(picture),
    ]
    with caplog.at_level(logging.WARNING, logger="multimodal.app"):
        for entry in sent:
            message = refused(url, "image_to_text", image_to_text(image=entry))
            assert message == NOT_UPLOADED and str(root) not in message
    lines = [record.getMessage() for record in caplog.records if record.name == "multimodal.app"]
    assert len(lines) == len(sent) and all("\n" not in line for line in lines)
    assert "Traceback" not in capfd.readouterr().err
    assert answer(url, "search_captions", [{"path": picture}])[0] == "error"
    # An example picture, sent as the browser sends it (gradio copied it among the uploads), is read.
    samples = [c["props"]["samples"] for c in httpx.get(f"{url}config").json()["components"] if c["type"] == "dataset"]
    example = next(rows[0][0] for rows in samples if isinstance(rows[0][0], dict))
    assert answer(url, "image_to_text", image_to_text(image=example, decoding="greedy"))[0] == "complete"


@pytest.fixture
def nothing_loads(monkeypatch):
    """evaluate.py may not load a model (nor evaluate anything) before its outputs are checked."""
    from multimodal import generation

    def load(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(generation.ImageTextGenerator, "__init__", load)


@pytest.mark.parametrize("flag, where, message", [
    ("--output", "folder", "--output: {path} is a folder; name the file to write in it"),
    ("--output", "file/results.json", "--output: cannot write {path}: {tmp}/file is a file, not a folder"),
    ("--output", "file/deeper/results.json", "--output: cannot write {path}: {tmp}/file is a file, not a folder"),
    ("--sheet", "folder", "--sheet: {path} is a folder; name the file to write in it"),
    ("--sheet", "file/sheet.png", "--sheet: cannot write {path}: {tmp}/file is a file, not a folder"),
    pytest.param("--output", "read-only/results.json",
                 "--output: cannot write {path}: this user may not write in {tmp}/read-only; choose another place",
                 marks=pytest.mark.skipif(os.geteuid() == 0, reason="root writes in read-only folders")),
])
def test_evaluate_refuses_an_output_it_could_not_write_before_loading_anything(
    served, tmp_path, capsys, nothing_loads, flag, where, message
):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("mine")
    (tmp_path / "read-only").mkdir(mode=0o555)
    path = tmp_path / where
    stderr = exits_with_one_line(script_main("evaluate.py"), ["--checkpoint", str(served[2] / "checkpoint"),
                                                               "--device", "cpu", flag, str(path)], capsys)
    assert message.format(path=path, tmp=tmp_path) in stderr
    assert (tmp_path / "file").read_text() == "mine" and not any((tmp_path / "folder").iterdir())


def test_evaluate_refuses_a_checkpoint_where_its_results_cannot_go_and_says_to_pass_output(
    served, capsys, nothing_loads
):
    checkpoint = served[2] / "checkpoint"
    (checkpoint / "evaluation-limit-3.json").mkdir()
    stderr = exits_with_one_line(script_main("evaluate.py"), ["--checkpoint", str(checkpoint), "--limit", "3"], capsys)
    assert f"{checkpoint / 'evaluation-limit-3.json'} is a folder; name the file to write in it" in stderr
    assert "--output FILE puts them elsewhere" in stderr
