"""train.py refuses a path it cannot use in one line (exit 2), before any model is built."""

from __future__ import annotations

import runpy

import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def train_main():
    return runpy.run_path(str(REPO / "train.py"))["main"]


def refusal(train_main, argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as stopped:
        train_main(argv)
    error = capsys.readouterr().err
    assert stopped.value.code == 2 and "Traceback" not in error
    return error


def test_a_text_encoder_that_is_no_folder_is_refused_without_a_download(train_main, tmp_path, capsys):
    missing = tmp_path / "no-bert"
    error = refusal(train_main, ["--preset", "shapes", "--text-encoder", str(missing),
                                 "--output-dir", str(tmp_path / "out")], capsys)
    assert f"--text-encoder {missing} is not a folder, nor a text encoder" in error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", ["--data-dir", "--replay-data"])
def test_a_data_folder_that_is_a_link_loop_is_refused(train_main, flag, tmp_path, capsys):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    replay = ["--init-from", str(tmp_path), "--replay-images", "1"] if flag == "--replay-data" else []
    error = refusal(train_main, ["--preset", "shapes", flag, str(loop), *replay,
                                 "--output-dir", str(tmp_path / "out")], capsys)
    assert f"{flag} {loop} is a link loop" in error
    assert not (tmp_path / "out").exists()
