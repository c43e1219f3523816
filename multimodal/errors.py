"""The errors a person can cause, each with a message that says what to do, and the warnings
the command lines show in one line.

They live here, in a module that imports nothing, so that the command lines can catch them
(and print one line, exit code 2) without loading torch.
"""

from __future__ import annotations


class InvalidInputError(ValueError):
    """An argument or input file that cannot be used; the message says why."""


class ConfigError(InvalidInputError):
    """A configuration field with a value it cannot take. `field` names it, so a command line
    can name its flag instead: "--batch-size must be at least 1, got 0"."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field} {problem}")


class CheckpointError(InvalidInputError):
    """A checkpoint folder that cannot be loaded."""


class DatasetLayoutError(InvalidInputError):
    """A dataset folder that is missing or not laid out as expected."""


class DeviceUnavailableError(InvalidInputError):
    """A device was asked for that this machine does not have."""


class TrainingError(RuntimeError):
    """A run that cannot go on; the message says why and what was kept."""


class PromptTruncatedWarning(UserWarning):
    """A prompt longer than the text encoder takes: only its beginning is used."""


class OutsideTrainingDataWarning(UserWarning):
    """An input unlike anything the checkpoint was trained on: its output means little."""


class SlowPrecisionWarning(UserWarning):
    """A precision this machine can only emulate, many times slower than fp32."""
