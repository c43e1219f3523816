"""What the command lines generate_t2i.py and generate_i2t.py share.

A person running them should see only what they need: bad input is one line on stderr and
exit code 2 (never a traceback), library chatter is silenced, and the checkpoint is found
without flags once `python train.py` has written one.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, NoReturn

if TYPE_CHECKING:
    from multimodal.generation import ImageTextGenerator

# Nothing here imports torch, transformers or diffusers at the top: parsing arguments, --help
# and usage errors answer at once; the libraries load when a command really runs.

DEFAULT_CHECKPOINTS = (Path("checkpoints/best"), Path("checkpoints/latest"))


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (its usage block hides the reason)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        metavar="DIR",
        help="checkpoint folder, or a training run folder (its best/, else latest/); "
        "default: checkpoints/best, then checkpoints/latest",
    )
    parser.add_argument("--seed", type=int, metavar="N", help="random seed: the same seed gives the same output")
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to run; auto: CUDA when present"
    )


# -- argument types: argparse turns their ArgumentTypeError into a one-line error ----------
def _checked(convert: Callable[[str], float], ok: Callable[[float], bool], wanted: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value

    return parse


positive_int = _checked(int, lambda v: v > 0, "a whole number above 0")
positive_float = _checked(float, lambda v: v > 0, "a number above 0")
non_negative_float = _checked(float, lambda v: v >= 0, "a number of 0 or more")
probability = _checked(float, lambda v: 0 < v <= 1, "a number in (0, 1]")


def prompt(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("a prompt must not be empty")
    return text


# -- running ------------------------------------------------------------------------------
def find_checkpoint(checkpoint: str | None) -> Path:
    """The folder given, else the first default that exists; none at all means train first."""
    from multimodal.models import CheckpointError

    if checkpoint is not None:
        return Path(checkpoint)
    for candidate in DEFAULT_CHECKPOINTS:
        if candidate.is_dir():
            return candidate
    raise CheckpointError(
        "no checkpoint in checkpoints/best or checkpoints/latest; "
        "train one first (python train.py --preset shapes) or pass --checkpoint DIR"
    )


def load_generator(args: argparse.Namespace) -> ImageTextGenerator:
    from multimodal.generation import ImageTextGenerator

    return ImageTextGenerator(find_checkpoint(args.checkpoint), device=args.device)


@contextmanager
def friendly_errors(prog: str) -> Iterator[None]:
    """Library logs and warnings off (ours shown in one line); bad input or a file that cannot
    be read or written → one line on stderr and exit code 2."""
    from diffusers.utils import logging as diffusers_logging

    from multimodal.device import DeviceUnavailableError
    from multimodal.generation import InvalidInputError, PromptTruncatedWarning
    from multimodal.models import CheckpointError
    from multimodal.models.text_encoder import quiet_transformers

    def one_line(message, category, *rest) -> None:
        print(f"{prog}: warning: {message}", file=sys.stderr)

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        with quiet_transformers(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.simplefilter("always", PromptTruncatedWarning)
            warnings.showwarning = one_line
            yield
    except (InvalidInputError, CheckpointError, DeviceUnavailableError, OSError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        diffusers_logging.set_verbosity(verbosity)
