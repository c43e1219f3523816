"""The machinery every config shares: fields that carry their help, checks and JSON.

A field is declared with `option(default, help, ...)`; a config validates itself on
construction (every float finite, every seed one torch takes, then its own `validate`) and
round-trips through JSON (`to_dict` / `from_dict`), which is how checkpoints describe the
model they hold; the command lines build their flags from the fields
(multimodal/cli.py). Nothing here imports torch, so `--help` and usage errors answer at once.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any, Callable, TypeVar

from multimodal.errors import ConfigError


# The seeds every command line, config and the API accept. torch's generators take [0, 2**64)
# (manual_seed maps a negative seed onto it, so -1 would be a second name of 2**64 - 1); half
# of that leaves room for what training adds to its seed per process, epoch and step.
SEED_LIMIT = 2**63
SEED_RANGE = f"a whole number from 0 to {SEED_LIMIT - 1} (2**63 - 1)"


def option(
    default: Any,
    help: str,
    *,
    group: str = "",
    flag: str | None = None,
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None,
    seed: bool = False,
) -> Any:
    """A config field with what a person needs to set it: its help text, the `--help` group it
    is listed in, its flag when that is not `--field-name`, the values it may take (or a
    function that says them when asked: the preset names, which a program may add to), and
    whether it is a random seed (checked to be one on construction, by `seed_problem`)."""
    metadata = {"help": help, "group": group, "flag": flag, "choices": choices, "seed": seed}
    return dataclasses.field(default=default, metadata=metadata)


def seed_problem(value: Any) -> str | None:
    """Why `value` cannot seed torch's generators, or None when it can. The one check of a seed:
    config fields, the --seed flag and the API's `seed` arguments all ask it."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < SEED_LIMIT:
        return f"must be {SEED_RANGE}, got {value!r}"
    return None


def check_seed(value: int | None, name: str = "seed") -> int | None:
    """`value` when it is None or a seed torch takes; a ConfigError naming `name` otherwise."""
    problem = None if value is None else seed_problem(value)
    require(problem is None, name, problem or "")
    return value


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
            # inf and NaN pass every comparison a field's own check makes (inf >= 0), then draw black
            # pictures or random words: no field of any config means anything by them.
            require(not isinstance(value, float) or math.isfinite(value), field.name,
                    f"must be a finite number, got {value}")
            if field.metadata.get("seed"):
                check_seed(value, field.name)
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

