"""Checkpoints on the Hugging Face Hub, through `huggingface_hub`: a repo id ("user/name")
resolves to a snapshot in the Hub client's own cache (downloaded once; with HF_HUB_OFFLINE=1
from that cache alone), and a checkpoint folder uploads as a model repo.

Nothing here runs unless a repo id is given: a name is a repo id only when no local path of that
name exists and its first part is not a local folder either, so a mistyped local path
("checkpoints/demoo") is reported as missing, never looked up on the Hub.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from multimodal.errors import CheckpointError, InvalidInputError

REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# What a checkpoint or adapter folder holds that another machine needs; never the optimiser's
# state, which only resuming on the training machine reads.
SHARED_FILES = [
    "config.json", "model.safetensors", "README.md", "trainer_state.json",
    "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
    "adapter_config.json", "adapter_model.safetensors", "base_checkpoint.json",
]
# A snapshot's folder in the Hub cache: <cache>/models--<namespace>--<name>/snapshots/<commit>.
_SNAPSHOT = re.compile(r"models--(?P<namespace>[^/]+?)--(?P<name>[^/]+)/snapshots/(?P<commit>[0-9a-f]{40})/?$")


def is_repo_id(name: str | os.PathLike) -> bool:
    """Whether `name` can only mean a Hub repo: "user/name", and nothing of that name here."""
    text = str(name)
    if not REPO_ID.fullmatch(text) or text.startswith(".") or Path(text).exists():
        return False
    return not Path(text.split("/")[0]).is_dir()


def in_cache(repo_id: str) -> bool:
    """Whether the local Hub cache holds `repo_id`'s config.json: a model name that loads offline."""
    import huggingface_hub

    try:
        return isinstance(huggingface_hub.try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # HFValidationError: not a repo id at all ("/x/no-bert")
        return False


def hub_origin(folder: str | os.PathLike) -> tuple[str, str] | None:
    """(repo id, commit) of a folder that is a snapshot in the Hub cache, else None."""
    found = _SNAPSHOT.search(Path(folder).resolve().as_posix())
    return (f"{found['namespace']}/{found['name']}", found["commit"]) if found else None


def download(repo_id: str, revision: str | None = None) -> Path:
    """The local snapshot of `repo_id` at `revision` (default: main), fetched if not cached."""
    import huggingface_hub
    from huggingface_hub import errors

    offline = huggingface_hub.constants.HF_HUB_OFFLINE
    at = f" at revision {revision}" if revision else ""
    try:
        folder = huggingface_hub.snapshot_download(repo_id, revision=revision, allow_patterns=SHARED_FILES)
    except (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled):
        if offline:
            raise CheckpointError(
                f"{repo_id}{at} is not in the local Hub cache, and HF_HUB_OFFLINE=1 forbids downloading it; "
                "unset HF_HUB_OFFLINE or give a local checkpoint folder"
            ) from None
        raise CheckpointError(f"cannot reach the Hub to download {repo_id}{at}; check the connection") from None
    except errors.RevisionNotFoundError:
        raise CheckpointError(f"{repo_id} has no revision {revision}") from None
    except errors.RepositoryNotFoundError:
        raise CheckpointError(
            f"no Hub repo {repo_id} (or it is private: log in with `hf auth login`), and no local folder of that name"
        ) from None
    except errors.HfHubHTTPError as error:
        raise CheckpointError(f"the Hub refused {repo_id}{at}: {str(error).splitlines()[0]}") from None
    return Path(folder)


def upload(folder: str | os.PathLike, repo_id: str, *, revision: str | None = None, private: bool | None = None,
           token: str | None = None, commit_message: str = "Upload checkpoint") -> str:
    """Create `repo_id` if it does not exist and commit `folder`'s shareable files to it; the
    commit's URL."""
    import huggingface_hub
    from huggingface_hub import errors

    if not REPO_ID.fullmatch(repo_id):
        raise InvalidInputError(f"{repo_id!r} is not a Hub repo id: write it as user/name")
    api = huggingface_hub.HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, revision=revision,
                                   allow_patterns=SHARED_FILES, commit_message=commit_message)
    except errors.OfflineModeIsEnabled:
        raise CheckpointError(f"HF_HUB_OFFLINE=1 forbids uploading to {repo_id}; unset it to push") from None
    except errors.HfHubHTTPError as error:
        raise CheckpointError(f"the Hub refused the upload to {repo_id}: {str(error).splitlines()[0]}") from None
    return str(commit.commit_url)
