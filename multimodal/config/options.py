"""The machinery every config shares: fields that carry their help, checks and JSON.

A field is declared with `option(default, help, ...)`; a config validates itself on
construction and round-trips through JSON (`to_dict` / `from_dict`), which is how checkpoints
describe the model they hold; the command lines build their flags from the fields
(multimodal/cli.py). Nothing here imports torch, so `--help` and usage errors answer at once.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Callable, TypeVar

from multimodal.errors import ConfigError


def option(
    default: Any,
    help: str,
    *,
    group: str = "",
    flag: str | None = None,
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None,
) -> Any:
    """A config field with what a person needs to set it: its help text, the `--help` group it
    is listed in, its flag when that is not `--field-name`, and the values it may take (or a
    function that says them when asked: the preset names, which a program may add to)."""
    return dataclasses.field(default=default, metadata={"help": help, "group": group, "flag": flag, "choices": choices})


def suggest(name: str, known: list[str]) -> str:
    """' (did you mean X?)' for the closest known name, or ''."""
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def choices_of(field: dataclasses.Field) -> tuple[str, ...] | None:
    """The values a field may take, or None for any."""
    choices = field.metadata.get("choices")
    return choices() if callable(choices) else choices


def require(ok: bool, field: str, problem: str) -> None:
    if not ok:
        raise ConfigError(field, problem)


ConfigT = TypeVar("ConfigT", bound="Config")


class Config:
    """What every config shares: checks on construction, JSON round trips that refuse unknown
    keys, and `replace` with a suggestion for a misspelt field."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            choices = choices_of(field)
            value = getattr(self, field.name)
            require(
                choices is None or value in choices, field.name, f"must be one of {', '.join(choices or ())}, got {value!r}"
            )
        self.validate()

    def validate(self) -> None:
        """Refuse values that cannot work, with a ConfigError that names the field."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [field.name for field in dataclasses.fields(cls)]

    @classmethod
    def check_names(cls, names: Any) -> None:
        """A ValueError naming the first unknown field, with the closest known one."""
        known = cls.field_names()
        for name in names:
            if name not in known:
                raise ValueError(f"unknown {cls.__name__} field {name!r}{suggest(name, known)}")

    @classmethod
    def from_dict(cls: type[ConfigT], values: dict[str, Any]) -> ConfigT:
        cls.check_names(values)
        return cls(**values)

    def replace(self: ConfigT, **changes: Any) -> ConfigT:
        """A copy with some fields changed (and checked again)."""
        self.check_names(changes)
        return dataclasses.replace(self, **changes)

