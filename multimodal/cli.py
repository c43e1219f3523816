"""What the command lines (train.py, generate_t2i.py, generate_i2t.py, evaluate.py) share.

A person running them should see only what they need: every flag has help text, its true
default and its choices; bad input is one line on stderr naming the flag, with exit code 2
(never a traceback); library chatter is silenced; and the checkpoint is found without flags
once `make demo` or `python train.py` has written one. Every flag is taken in the spellings people
type besides its own (`ArgumentParser.ours`): with "_" for "-", as transformers' HfArgumentParser
takes them, as its config field's name, and in the design documents' words (DESIGN_NAMES).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
import sys
import typing
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, NoReturn, Sequence

from multimodal.config import DESIGN_NAMES, InferenceConfig
from multimodal.config.options import SEED_RANGE, choices_of, seed_problem
from multimodal.errors import (
    ConfigError,
    InvalidInputError,
    OutsideTrainingDataWarning,
    PromptTruncatedWarning,
    SlowPrecisionWarning,
    TrainingError,
)

if TYPE_CHECKING:
    from multimodal.generation import ImageTextGenerator

# Nothing here imports torch, transformers or diffusers at the top: parsing arguments, --help
# and usage errors answer at once; the libraries load when a command really runs.


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (its usage block hides the reason),
    takes no abbreviations of flags, suggests the flag a typo meant, and takes each flag in the
    other spellings of it (`ours`); `--help` lists the dashed ones alone."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        return super().parse_known_args(self.respelt(sys.argv[1:] if args is None else args), namespace)

    def respelt(self, args: Sequence[str]) -> list[str]:
        """`args` with each flag spelt another way (`--data_dir`, `--data_dir=X`) as this
        command's own; values, positional arguments and all after `--` as they are."""
        args = list(args)
        end = args.index("--") if "--" in args else len(args)

        def respell(arg: str) -> str:
            flag, equals, value = arg.partition("=")
            ours = self.ours(flag) if flag.startswith("--") else None
            return ours + equals + value if ours else arg

        return [respell(arg) for arg in args[:end]] + args[end:]

    def ours(self, flag: str) -> str | None:
        """This command's flag that `flag` spells, or None (see `spellings`)."""
        spellings = self.spellings()
        return spellings.get(flag) or spellings.get("--" + flag[2:].replace("_", "-"))

    def spellings(self) -> dict[str, str]:
        """Each spelling this command takes → its flag: the flags themselves, with "_" for "-"
        wherever typed (`--data_dir`); an option's config field name (`--learning-rate`: --lr);
        a design document's name for that field (DESIGN_NAMES: `--ldm-epochs`: --diffusion-epochs).
        A flag that stores False (`--no-open-images`) means the opposite of its field's name."""
        fields: dict[str, str] = {}
        for action in self._actions:
            if action.option_strings and action.const is not False:
                fields.setdefault(action.dest, action.option_strings[0])
        fields |= {design: fields[field] for design, field in DESIGN_NAMES.items() if field in fields}
        return {"--" + name.replace("_", "-"): flag for name, flag in fields.items()} | {
            flag: flag for flag in self._option_string_actions}

    def error(self, message: str) -> NoReturn:
        unknown = re.match(r"unrecognized arguments: (\S+)", message)
        if unknown:
            flag = unknown.group(1).split("=")[0]
            name = flag[2:].replace("-", "_")
            if flag.startswith("--") and name in DESIGN_NAMES:  # the documents' name of a setting this command lacks
                field = "--" + DESIGN_NAMES[name].replace("_", "-")
                message = f"unrecognized argument {flag} (the design documents' name for {field}: {self.prog} has none)"
            else:
                close = self.closest(flag)
                if close:
                    message = f"unrecognized argument {flag} (did you mean {close}?)"
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def closest(self, flag: str) -> str | None:
        """The flag a mistyped `flag` most likely meant: the one of the closest spelling this
        command takes, "_" read as "-" (`--num_embedings`: --codebook-size)."""
        spellings = self.spellings()
        typed = "--" + flag[2:].replace("_", "-") if flag.startswith("--") else flag
        close = difflib.get_close_matches(typed, list(spellings), n=1)
        return spellings[close[0]] if close else None


# -- flags made from config fields ---------------------------------------------------------
def flag_of(field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def _value_type(hint: Any) -> Any:
    """int, float, str or bool from a field's type hint (`int | None` → int); None for others."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return args[0] if args[0] in (int, float, str, bool) else None


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else f"{value:g}" if isinstance(value, float) else str(value)


def add_config_arguments(
    parser: argparse.ArgumentParser,
    config_class: type,
    defaults: dict[str, dict[str, Any]] | None = None,
    skip: tuple[str, ...] = (),
    group_titles: dict[str, str] | None = None,
) -> None:
    """One flag per field of `config_class` (a config dataclass), with the field's help text,
    default and choices, in `--help` groups by the field's group. Each flag's value defaults to
    None, so that what a person typed can be told apart from the defaults. `defaults` maps a
    label (a preset) to its values, when defaults depend on it."""
    hints = typing.get_type_hints(config_class)
    groups: dict[str, argparse._ArgumentGroup] = {}
    instance_defaults = defaults or {"": {f.name: f.default for f in dataclasses.fields(config_class)}}
    for field in dataclasses.fields(config_class):
        kind = _value_type(hints[field.name])
        if field.name in skip or kind is None:
            continue
        title = (group_titles or {}).get(field.metadata.get("group", ""), field.metadata.get("group") or "options")
        if title not in groups:  # a group the parser already has (e.g. "model and device") gets the flag too
            known = [group for group in parser._action_groups if group.title == title]
            groups[title] = known[0] if known else parser.add_argument_group(title)
        values = {label: values[field.name] for label, values in instance_defaults.items()}
        distinct = set(map(repr, values.values()))
        if len(distinct) == 1:
            value = next(iter(values.values()))
            shown = "" if value is None else f" (default: {_show(value)})"
        else:
            # Presets that share a value share one entry: "coco: false; shapes, scenes: true".
            labels: dict[str, list[str]] = {}
            for label, v in values.items():
                labels.setdefault(repr(v), []).append(label)
            shown = " (default: " + "; ".join(
                f"{', '.join(names)}: {_show(values[names[0]])}" for names in labels.values()
            ) + ")"
        help_text = field.metadata.get("help", "") + shown
        flag = flag_of(field)
        if kind is bool:
            groups[title].add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            choices = choices_of(field)
            metavar = None if choices else {int: "N", float: "F", str: "TEXT"}[kind]
            groups[title].add_argument(flag, dest=field.name, type=kind, choices=choices, metavar=metavar, help=help_text)


def given(args: argparse.Namespace, config_class: type) -> dict[str, Any]:
    """The fields of `config_class` that a person set on the command line."""
    names = {field.name for field in dataclasses.fields(config_class)}
    return {name: value for name, value in vars(args).items() if name in names and value is not None}


def build_config(parser: argparse.ArgumentParser, make: Callable[[], Any], *config_classes: type) -> Any:
    """`make()`, with a bad value reported as a usage error that names the flag."""
    try:
        return make()
    except ConfigError as error:
        fields = {f.name: f for cls in config_classes for f in dataclasses.fields(cls)}
        name = flag_of(fields[error.field]) if error.field in fields else error.field
        parser.error(f"{name} {error.problem}")
    except ValueError as error:
        parser.error(str(error))


def config_from_flags(parser: argparse.ArgumentParser, args: argparse.Namespace, config_class: type) -> Any:
    """`config_class` from the flags a person set (defaults for the rest), a bad value reported as
    `build_config` does."""
    return build_config(parser, lambda: config_class(**given(args, config_class)), config_class)


# -- common flags and argument types ---------------------------------------------------------
def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model and device")
    group.add_argument(
        "--checkpoint",
        metavar="DIR",
        help="checkpoint folder, or a training run folder (its best/, else latest/); "
        "default: checkpoints/, then checkpoints/demo/ (what make demo writes)",
    )
    group.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to run; auto: CUDA when present (default: auto)"
    )
    group.add_argument("--seed", type=seed, metavar="N",
                       help=f"random seed, {SEED_RANGE}: the same seed gives the same output")
    group.add_argument(
        "--adapter", metavar="DIR",
        help="a LoRA adapter folder (train.py --lora-rank writes one) applied to the checkpoint; without "
        "--checkpoint, its base is the checkpoint the adapter was trained from",
    )
    add_config_arguments(parser, InferenceConfig)


# argparse turns an ArgumentTypeError into a one-line error naming the flag.
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
# inf and nan parse as floats and pass `v > 0`; as a temperature or a penalty they mean nothing.
positive_float = _checked(float, lambda v: 0 < v < float("inf"), "a finite number above 0")
probability = _checked(float, lambda v: 0 < v <= 1, "a number in (0, 1]")


def seed(text: str) -> int:
    """A --seed value: one torch's generators take (the check is the configs' own, `seed_problem`)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {SEED_RANGE}, got {text!r}") from None
    problem = seed_problem(value)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value


def prompt(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("a prompt must not be empty")
    return text


# -- running ------------------------------------------------------------------------------
def resolve_checkpoint_or_exit(parser: argparse.ArgumentParser, checkpoint: str | None, adapter: str | None = None) -> Path:
    """The checkpoint folder to load, found before torch loads (without one named, an adapter's
    base); a problem is a usage error."""
    from multimodal.paths import adapter_base, resolve_checkpoint

    try:
        return resolve_checkpoint(checkpoint if checkpoint is not None or adapter is None else adapter_base(adapter))
    except InvalidInputError as error:
        parser.error(str(error))


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("running")
    group.add_argument("--threads", type=positive_int, metavar="N",
                       help="CPU threads for the model (default: one per two cores this process may use, at least one)")
    group.add_argument("--quiet", action="store_true", help="no progress bars")


def warn(parser: argparse.ArgumentParser, message: str) -> None:
    print(f"{parser.prog}: warning: {message}", file=sys.stderr)


def default_threads() -> int:
    """The CPU threads a command that runs a trained model uses unless --threads says: one per two
    cores this process may use. On 2-core machines one thread beat two in every case measured but
    an idle machine at batch 8, and leaves a core to the rest (the browser, the page's server)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // 2)


def set_thread_policy(threads: int | None) -> None:
    """Before torch loads: `threads` OpenMP threads (default_threads() unless given, or unless
    OMP_NUM_THREADS is set) that wait for work by sleeping, not by spinning. Spinning ones made
    sampling 40× slower beside one other busy process on a 2-core machine (DESIGN.md)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    else:
        os.environ.setdefault("OMP_NUM_THREADS", str(default_threads()))


def set_threads(threads: int | None) -> None:
    """After torch loads: `threads` intra-op threads, if given."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def prepare_generation(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Path:
    """The generators' checks before torch loads: the checkpoint to load (a usage error where
    there is none), a device this machine has, and their threads (`set_thread_policy`)."""
    checkpoint = resolve_checkpoint_or_exit(parser, args.checkpoint, args.adapter)
    check_device(parser, args.device)
    set_thread_policy(args.threads)
    return checkpoint


def load_generator(args: argparse.Namespace, checkpoint: Path) -> ImageTextGenerator:
    """Inside `friendly_errors`, once the flags are good: torch loads, and the generator the
    flags describe (device, adapter, precision, --threads, progress bars unless --quiet)."""
    from multimodal.generation import ImageTextGenerator

    set_threads(args.threads)
    inference = InferenceConfig(**given(args, InferenceConfig))
    return ImageTextGenerator(checkpoint, device=args.device, progress=not args.quiet, adapter=args.adapter,
                              precision=inference.precision)


def cuda_present() -> bool:
    """Whether this machine has an NVIDIA driver, told without importing torch."""
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidiactl").exists()


def check_device(parser: argparse.ArgumentParser, device: str) -> None:
    if device.startswith("cuda") and not cuda_present():
        parser.error(f"--device {device}: this machine has no CUDA GPU (no NVIDIA driver); use --device cpu or auto")


def one_line_warnings(prog: str) -> Callable[..., None]:
    def show(message: Any, category: Any, *rest: Any) -> None:
        print(f"{prog}: warning: {message}", file=sys.stderr)

    return show


@contextmanager
def friendly_errors(prog: str) -> Iterator[None]:
    """Library logs and warnings off (ours shown in one line); bad input or a file that cannot
    be read or written → one line on stderr and exit code 2."""
    from diffusers.utils import logging as diffusers_logging

    from multimodal.logs import quiet_transformers

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        with quiet_transformers(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.simplefilter("always", PromptTruncatedWarning)
            warnings.simplefilter("always", OutsideTrainingDataWarning)
            warnings.simplefilter("always", SlowPrecisionWarning)
            warnings.showwarning = one_line_warnings(prog)
            yield
    except (InvalidInputError, TrainingError, OSError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        diffusers_logging.set_verbosity(verbosity)
