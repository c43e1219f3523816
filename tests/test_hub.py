"""Checkpoints by Hub repo id, offline: a cache filled as the Hub client fills it, and uploads to
a stand-in of the Hub's HTTP API served on 127.0.0.1 by the test."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from multimodal import hub
from multimodal.errors import CheckpointError
from multimodal.paths import resolve_checkpoint

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fill_cache(cache: Path, repo_id: str, checkpoint: Path) -> Path:
    """The layout huggingface_hub writes: blobs by hash, a snapshot of links, refs/main."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for file in checkpoint.iterdir():
        if file.name in hub.SHARED_FILES:
            blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
            shutil.copyfile(file, blob)
            (snapshot / file.name).symlink_to(Path("../../blobs") / blob.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    return cache


def test_a_repo_id_loads_from_the_hub_cache_offline(checkpoint, hub_cache, tmp_path, monkeypatch):
    from multimodal import GenerativeMultimodalModel, ImageTextGenerator

    snapshot = fill_cache(hub_cache, "someone/shapes-demo", checkpoint)
    monkeypatch.chdir(tmp_path)
    assert resolve_checkpoint("someone/shapes-demo") == snapshot
    assert hub.hub_origin(snapshot) == ("someone/shapes-demo", COMMIT)
    model = GenerativeMultimodalModel.from_pretrained("someone/shapes-demo", revision=COMMIT)
    local = GenerativeMultimodalModel.from_pretrained(checkpoint)
    assert all((a == b).all() for a, b in zip(model.state_dict().values(), local.state_dict().values()))
    assert ImageTextGenerator("someone/shapes-demo").checkpoint_dir == snapshot


def test_a_repo_id_not_in_the_cache_offline_is_one_line_and_a_local_typo_never_a_download(hub_cache, tmp_path,
                                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="not in the local Hub cache, and HF_HUB_OFFLINE=1"):
        resolve_checkpoint("someone/elsewhere")
    (tmp_path / "checkpoints").mkdir()
    assert not hub.is_repo_id("checkpoints/demoo")  # a folder here: a missing path, not a repo
    with pytest.raises(CheckpointError, match="checkpoints/demoo does not exist"):
        resolve_checkpoint("checkpoints/demoo")


class StandInHub(BaseHTTPRequestHandler):
    """The four calls upload_folder makes: create the repo, validate the card's YAML, ask how each
    file is to be sent (answer: inline), and the commit, whose files it keeps."""

    received: dict[str, bytes] = {}
    requests: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.requests.append(self.path.split("?")[0])
        if self.path.startswith("/api/repos/create"):
            answer = {"url": f"http://{self.headers['Host']}/{json.loads(body)['organization']}/{json.loads(body)['name']}"}
        elif self.path.startswith("/api/validate-yaml"):
            answer = {}
        elif "/preupload/" in self.path:
            files = json.loads(body)["files"]
            answer = {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
        elif "/commit/" in self.path:
            for line in body.splitlines():
                entry = json.loads(line)
                if entry["key"] == "file":
                    self.received[entry["value"]["path"]] = base64.b64decode(entry["value"]["content"])
            answer = {"commitUrl": f"http://{self.headers['Host']}/someone/shapes-demo/commit/{COMMIT}",
                      "commitOid": COMMIT}
        else:
            self.send_error(404)
            return
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def test_push_to_hub_commits_the_saved_checkpoint(checkpoint, tmp_path, monkeypatch):
    from multimodal import GenerativeMultimodalModel

    server = ThreadingHTTPServer(("127.0.0.1", 0), StandInHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    model = GenerativeMultimodalModel.from_pretrained(checkpoint)
    try:
        url = model.push_to_hub("someone/shapes-demo", token="hf_test")
    finally:
        server.shutdown()
    assert url.endswith(f"/someone/shapes-demo/commit/{COMMIT}")
    assert {"/api/repos/create", "/api/models/someone/shapes-demo/commit/main"} <= set(StandInHub.requests)
    assert json.loads(StandInHub.received["config.json"]) == json.loads((checkpoint / "config.json").read_text())
    pushed = tmp_path / "pushed"
    pushed.mkdir()
    for name, data in StandInHub.received.items():
        (pushed / name).write_bytes(data)
    loaded = GenerativeMultimodalModel.from_pretrained(pushed)
    assert all((a == b).all() for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    assert "README.md" in StandInHub.received
