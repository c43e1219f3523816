"""Checkpoints by Hub repo id, offline: a cache filled as the Hub client fills it, and uploads and
downloads through a stand-in of the Hub's HTTP API on 127.0.0.1 (tests/hub_standin.py)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from hub_standin import StandInHub, stand_in_hub
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


def test_a_pushed_checkpoint_loads_back_by_its_repo_id(checkpoint, tmp_path, monkeypatch):
    from multimodal import GenerativeMultimodalModel, ImageTextGenerator

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.chdir(tmp_path)
    model = GenerativeMultimodalModel.from_pretrained(checkpoint)
    with stand_in_hub() as endpoint:
        monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", endpoint)  # as HF_ENDPOINT sets them
        monkeypatch.setattr("huggingface_hub.constants.HUGGINGFACE_CO_URL_TEMPLATE",
                            endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        url = model.push_to_hub("someone/shapes-demo", token="hf_test")
        assert url.startswith(f"{endpoint}/someone/shapes-demo/commit/")
        assert "model.safetensors" in StandInHub.repos["someone/shapes-demo"]
        loaded = GenerativeMultimodalModel.from_pretrained("someone/shapes-demo")
        generator = ImageTextGenerator("someone/shapes-demo")
        with pytest.raises(CheckpointError, match="no Hub repo someone/elsewhere"):
            resolve_checkpoint("someone/elsewhere")
    assert all((a == b).all() for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    assert hub.hub_origin(generator.checkpoint_dir)[0] == "someone/shapes-demo"
    assert "README.md" in StandInHub.repos["someone/shapes-demo"]


def test_an_adapter_of_a_hub_checkpoint_points_to_its_repo_and_commit(checkpoint, hub_cache, tmp_path, monkeypatch):
    from multimodal import GenerativeMultimodalModel, ImageTextGenerator
    from multimodal.adapters.lora import add_adapters, save_adapter
    from multimodal.adapters.targets import LORA_TARGETS
    from multimodal.paths import adapter_base

    snapshot = fill_cache(hub_cache, "someone/shapes-demo", checkpoint)
    monkeypatch.chdir(tmp_path)
    model = GenerativeMultimodalModel.from_pretrained("someone/shapes-demo")
    add_adapters(model, 2, 2, LORA_TARGETS.split(","), [])
    save_adapter(model, tmp_path / "adapter", snapshot)
    pointer = json.loads((tmp_path / "adapter" / "base_checkpoint.json").read_text())
    assert pointer["base_checkpoint"] == "someone/shapes-demo" and pointer["revision"] == COMMIT
    assert adapter_base(tmp_path / "adapter") == snapshot
    assert ImageTextGenerator(adapter=tmp_path / "adapter").checkpoint_dir == snapshot
