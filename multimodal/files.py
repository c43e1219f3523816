"""Writing a file or a folder whole or not at all: a reader, or a run that crashes midway,
never sees half of one. Everything the package writes for a person (checkpoints, exports,
pictures, tables, model cards) goes through here."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from multimodal.errors import InvalidInputError


def being_written(target: Path) -> Path:
    """Where a new version of `target` (a file or a folder) is written before it is renamed into place."""
    return target.with_name(f".{target.name}.tmp")


def set_aside(target: Path) -> Path:
    """Where the old version of folder `target` waits while the new one is renamed into place."""
    return target.with_name(f".{target.name}.old")


@contextmanager
def file_written_in_place(target: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `target` to write one file to. When the block ends well it
    replaces `target` in one rename; when it raises, the temporary file is removed and `target`
    is as it was."""
    target = Path(target)
    temporary = being_written(target)
    try:
        yield temporary
        temporary.replace(target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@contextmanager
def folder_written_in_place(target: str | os.PathLike) -> Iterator[Path]:
    """A fresh temporary folder beside `target` to write into. When the block ends well it
    replaces `target` (the old one is moved aside, then removed), so a crash never leaves half a
    folder; when it raises, the temporary folder is removed and `target` is as it was."""
    target = Path(target)
    temporary = being_written(target)
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    try:
        yield temporary
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    previous = set_aside(target)
    shutil.rmtree(previous, ignore_errors=True)
    if target.exists():
        target.rename(previous)
    temporary.rename(target)
    shutil.rmtree(previous, ignore_errors=True)


def overlaps(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether folders `a` and `b` are one, or one holds the other (after resolving links and
    `..`), so that replacing one would destroy some of the other."""
    a, b = Path(a).resolve(), Path(b).resolve()
    return a == b or a in b.parents or b in a.parents


def input_overwritten(output: str | os.PathLike, inputs: dict[str, str | os.PathLike | None]) -> str | None:
    """What is wrong with writing `output` when the same command reads `inputs` (what each is
    → its folder; None: not given), or None: an output that is, holds or lies inside an input
    would destroy it (with --overwrite) or be read back as it (a data folder)."""
    for what, folder in inputs.items():
        if folder is not None and overlaps(output, folder):
            return f"{output} is, holds or lies inside {what} {folder}, which this command reads; choose another folder"
    return None


def check_writable(path: str | os.PathLike) -> None:
    """Refuse, before any work starts, a file that could not be written when the work ends (a
    folder in its place, a file where a folder should be, a folder this user may not write in):
    otherwise the work is done, then lost. Folders missing on the way are fine: writing makes them."""
    path = Path(path)
    if os.path.isdir(path):
        raise InvalidInputError(f"{path} is a folder; name the file to write in it")
    folder = path.parent
    while not os.path.exists(folder):  # os.path: a folder this user may not enter is one more "no"
        folder = folder.parent
    if not os.path.isdir(folder):
        raise InvalidInputError(f"cannot write {path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InvalidInputError(f"cannot write {path}: this user may not write in {folder}; choose another place")


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` whole: a reader never sees half a file."""
    with file_written_in_place(path) as temporary:
        temporary.write_text(text)
    return Path(path)
