"""What a data set's own text files say: their text, decoded as spreadsheet users expect, and
the image names they list, kept inside the data folder.

Every layout that reads a text file (metadata.jsonl or .csv, COCO's JSON, NAME.txt, captions.txt,
a shard's .txt or .json) decodes it here: UTF-8, with or without the byte-order mark Excel's
"CSV UTF-8" writes, or UTF-16 with its byte-order mark; anything else is refused at its line
rather than turned into captions of U+FFFD. Every file name such a file (or a parquet row) lists
goes through `listed_file`, so a data folder can only point at files inside itself.
"""

from __future__ import annotations

import codecs
import os
from pathlib import Path

from multimodal.errors import DatasetLayoutError

SAVE_AS_UTF8 = "save it as UTF-8 (in Excel: Save As, CSV UTF-8)"
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


class UnreadableText(DatasetLayoutError):
    """A data set's text file that cannot be decoded; `where` is its file and line."""

    def __init__(self, where: str, problem: str) -> None:
        self.where, self.problem = where, problem
        super().__init__(f"{where}: {problem}")


def decode_text(data: bytes, where: str) -> str:
    """`data` as text: UTF-8 (a byte-order mark dropped) or UTF-16 with its byte-order mark.
    An UnreadableText naming `where` and the line of the first byte that is neither."""
    encoding = next((name for bom, name in _BOMS if data.startswith(bom)), "utf-8")
    if encoding == "utf-8" and b"\x00" in data:  # UTF-16 without its byte-order mark: a NUL every other byte
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise UnreadableText(f"{where}:{line}", f"holds NUL bytes (UTF-16 without a byte-order mark?); {SAVE_AS_UTF8}")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data[: error.start].decode(encoding, errors="replace").count("\n") + 1
        byte = data[error.start : error.start + 1].hex()
        raise UnreadableText(f"{where}:{line}", f"not {encoding.upper().removesuffix('-SIG')} text "
                             f"(byte 0x{byte}); {SAVE_AS_UTF8}") from None


def read_text(path: Path) -> str:
    """The text of a data set's file, decoded by `decode_text`; a file that cannot be read at
    all (a folder, no permission) is an UnreadableText too."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UnreadableText(str(path), f"cannot be read ({error.strerror or error})") from None
    return decode_text(data, str(path))


def listed_file(folder: Path, name: str) -> Path | str:
    """`folder / name` for an image name a data set's file lists, or why it cannot be one: an
    absolute path, or one whose `..` climbs out of `folder`. Judged on the name alone, so a link
    the user made inside the folder is followed wherever it points."""
    relative = os.path.normpath(name) if name.strip() and "\x00" not in name else os.curdir
    if relative == os.curdir:
        return "is not a file name"
    if Path(name).anchor:  # absolute, or (on Windows) on a drive
        return "is an absolute path; name images relative to the folder that lists them"
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        return f"is outside {folder}; a data set names only files inside its folder"
    return folder / relative
