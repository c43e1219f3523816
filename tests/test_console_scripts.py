"""The commands an installed wheel has: every console script setup.cfg declares names a `main`
in the package that answers --help, `python -m multimodal.<command>` runs it, and the
repository's scripts are thin callers of the same functions."""

from __future__ import annotations

import configparser
import pkgutil
import runpy
import sys

import pytest

from conftest import REPO

COMMANDS = {  # console script: (module of the package, the repository's script)
    "multimodal-train": ("multimodal.train", "train.py"),
    "multimodal-t2i": ("multimodal.generate_t2i", "generate_t2i.py"),
    "multimodal-i2t": ("multimodal.generate_i2t", "generate_i2t.py"),
    "multimodal-evaluate": ("multimodal.evaluate", "evaluate.py"),
    "multimodal-serve": ("multimodal.serve", "app.py"),
    "multimodal-visualize": ("multimodal.visualize", "visualize.py"),
}


def console_scripts() -> dict[str, str]:
    """setup.cfg's console scripts: name → 'module:function'."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    lines = config["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict((part.strip() for part in line.split("=", 1)) for line in lines)


def answers_help(main, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_setup_cfg_declares_every_command():
    assert console_scripts() == {name: f"{module}:main" for name, (module, _) in COMMANDS.items()}


# The module is imported already (above), so runpy says it runs it a second time: as intended here.
@pytest.mark.filterwarnings("ignore:.*found in sys.modules after import of package:RuntimeWarning")
@pytest.mark.parametrize("name", COMMANDS)
def test_each_console_script_is_a_main_that_answers_help_and_the_script_calls_it(name, capsys, monkeypatch):
    main = pkgutil.resolve_name(console_scripts()[name])  # as the console script's wrapper finds it
    monkeypatch.setattr(sys, "argv", [name])  # argparse names the command after argv[0], as installed
    text = answers_help(main, capsys)
    assert text.startswith(f"usage: {name} ") and "--help" in text

    module, script = COMMANDS[name]
    assert runpy.run_path(str(REPO / script))["main"] is main  # the repository's script: the same function

    monkeypatch.setattr(sys, "argv", [f"{module}", "--help"])  # python -m multimodal.<command> --help
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module(module, run_name="__main__")
    assert exit_info.value.code == 0 and "usage:" in capsys.readouterr().out


def test_train_has_the_gradient_checkpointing_flag(capsys):
    from multimodal.train import build_parser, configs_from_args

    assert "--gradient-checkpointing" in answers_help(pkgutil.resolve_name("multimodal.train:main"), capsys)
    _, train_config = configs_from_args(build_parser().parse_args(["--preset", "shapes", "--gradient-checkpointing"]))
    assert train_config.gradient_checkpointing is True
