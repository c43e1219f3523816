"""Text → image from the command line.

The `multimodal-t2i` command of an installed package, also `python -m multimodal.generate_t2i`; the
repository's generate_t2i.py calls the same `main`.

    python generate_t2i.py "a large red circle on the left"                    # → generated.png
    python generate_t2i.py "a red circle" "a blue square" --num-samples 4 --output out/
    python generate_t2i.py --unconditional --num-samples 16                     # no prompt
    python generate_t2i.py "a blue square" --init-image x.png --strength 0.6    # image-to-image
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from multimodal import cli
from multimodal.config import SamplingConfig, sampling_presets
from multimodal.config.sampling import DEFAULT_STRENGTH, IMAGE_BATCH, PROMPT_FIELDS, check_strength
from multimodal.errors import ConfigError, InvalidInputError
from multimodal.files import check_writable
from multimodal.images import image_file_names, image_format

DEFAULT_FILE = Path("generated.png")
DEFAULT_FOLDER = Path("generated")
UNCONDITIONAL_NAME = "unconditional"  # the file names of pictures of no prompt: unconditional_<n>.png


def strength(text: str) -> float:
    """A --strength value, checked as the model checks it (`check_strength`)."""
    try:
        return check_strength(float(text))
    except ValueError as error:
        problem = error.problem if isinstance(error, ConfigError) else f"expected a number in [0, 1], got {text!r}"
        raise argparse.ArgumentTypeError(problem) from None


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(
        description="Draw images from text prompts with a trained checkpoint.",
        epilog="examples:\n"
        '  python generate_t2i.py "a large red circle on the left" --seed 0\n'
        '  python generate_t2i.py "a red circle" "a blue square" --num-samples 4 --output out/\n'
        '  python generate_t2i.py "a red circle" --steps 20 --sampler dpm --guidance-scale 5\n'
        '  python generate_t2i.py "a red circle" --no-diffusion       # fast preview\n'
        '  python generate_t2i.py --unconditional --num-samples 16    # no prompt\n'
        '  python generate_t2i.py "a blue square" --init-image x.png --strength 0.6',
    )
    parser.add_argument("prompts", nargs="*", type=cli.prompt, metavar="PROMPT",
                        help="what to draw (one or more; none with --unconditional)")
    output = parser.add_argument_group("output")
    output.add_argument(
        "--output",
        metavar="PATH",
        help="a file for one image (.png, .jpg or .webp: the extension picks the format; default generated.png), "
        "or a folder for <prompt>_<n>.png files: an existing one, a path ending in /, or for several images any "
        "path without an extension (default for several images: generated/)",
    )
    output.add_argument("--num-samples", type=cli.positive_int, metavar="N", default=1,
                        help=f"images per prompt; they are drawn {IMAGE_BATCH} at a time and each is written as its "
                        "batch ends, so any number fits in memory (default: 1)")
    output.add_argument("--overwrite", action="store_true", help="replace files that already exist")
    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--negative-prompt", type=cli.prompt, metavar="TEXT",
                          help="what guidance steers away from, instead of no text (for every prompt)")
    sampling.add_argument("--diffusion", action=argparse.BooleanOptionalAction, default=True,
                          help="draw by diffusion (the default); --no-diffusion: the fast preview, decoded straight from "
                          "the text embedding")
    sampling.add_argument("--unconditional", action="store_true",
                          help="draw without a prompt, from the model's learned 'no text' condition: pictures like "
                          "its training set's (files unconditional_<n>.png); no guidance, nothing to judge by")
    cli.add_config_arguments(parser, SamplingConfig, defaults=sampling_presets(), group_titles={"": "sampling"})
    redraw = parser.add_argument_group("image to image")
    redraw.add_argument("--init-image", metavar="FILE",
                        help="redraw this picture toward the prompt (SDEdit): its latent noised part of the way, then "
                        "denoised with the prompt")
    redraw.add_argument("--strength", type=strength, metavar="S",
                        help=f"with --init-image, in [0, 1]: how much of the denoising redraws it; 0 gives it back as "
                        f"the model reconstructs it, 1 ignores it (default: {DEFAULT_STRENGTH})")
    cli.add_common_arguments(parser)
    cli.add_run_arguments(parser)
    return parser


def check_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Options that would change nothing are refused (or, when harmless, warned about once)."""
    if args.unconditional:
        if args.prompts:
            parser.error("--unconditional draws without a prompt: give prompts or --unconditional, not both")
        for flag, given in (("--negative-prompt", args.negative_prompt is not None), ("--init-image", args.init_image),
                            ("--no-diffusion", not args.diffusion)):
            if given:
                parser.error(f"{flag} needs a prompt; --unconditional has none")
        steering = [name for name in cli.given(args, SamplingConfig) if name in PROMPT_FIELDS]
        if steering:
            flags = ", ".join(cli.flag_of(next(f for f in dataclasses.fields(SamplingConfig) if f.name == n))
                              for n in steering)
            parser.error(f"{flags} steer toward a prompt; --unconditional has none")
    elif not args.prompts:
        parser.error("the following arguments are required: PROMPT (or --unconditional)")
    if args.strength is not None and args.init_image is None:
        parser.error("--strength says how much of --init-image to redraw; give --init-image too")
    if args.init_image is not None:
        if not args.diffusion:
            parser.error("--init-image redraws by diffusion; --no-diffusion does not sample")
        if not Path(args.init_image).is_file():
            parser.error(f"--init-image {args.init_image}: no such file")
    if args.diffusion:
        return
    ignored = list(cli.given(args, SamplingConfig))
    if args.negative_prompt is not None:
        parser.error("--negative-prompt steers diffusion's guidance; --no-diffusion does not sample")
    if ignored:
        flags = ", ".join(cli.flag_of(next(f for f in dataclasses.fields(SamplingConfig) if f.name == n)) for n in ignored)
        parser.error(f"{flags} set how diffusion samples; --no-diffusion does not sample")
    if args.seed is not None:
        cli.warn(parser, "--seed changes nothing with --no-diffusion: the fast preview draws no noise")
    if args.num_samples > 1:
        cli.warn(parser, "--num-samples: the fast preview draws the same image each time for a prompt")


def output_paths(args: argparse.Namespace) -> list[Path]:
    """Where each image goes, decided before anything is computed (see --output's help)."""
    names_from = [UNCONDITIONAL_NAME] if args.unconditional else args.prompts
    count = len(names_from) * args.num_samples
    text = args.output
    folder = None
    if text is None and count > 1:
        folder = DEFAULT_FOLDER
    elif text and (text.endswith(("/", "\\")) or Path(text).is_dir() or (count > 1 and not Path(text).suffix)):
        folder = Path(text)
    if folder is None:
        path = Path(text) if text else DEFAULT_FILE
        if count > 1:
            raise InvalidInputError(
                f"--output {text} names one file, but {count} images are asked for: give a folder (end it with /)"
            )
        image_format(path)
        paths = [path]
    else:
        names = image_file_names(names_from, args.num_samples)
        paths = [folder / name for row in names for name in row]
    existing = [path for path in paths if path.exists()]
    if existing and not args.overwrite:
        raise InvalidInputError(f"{existing[0]} already exists; pass --overwrite to replace it")
    for path in paths:  # a place that cannot be written is found now, not after loading and drawing
        check_writable(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    cli.config_from_flags(parser, args, SamplingConfig)  # a bad value is a usage error before anything loads
    check_options(parser, args)
    try:
        paths = output_paths(args)
    except InvalidInputError as error:
        parser.error(str(error))
    checkpoint = cli.prepare_generation(parser, args)
    with cli.friendly_errors(parser.prog):
        generator = cli.load_generator(args, checkpoint)  # torch loads only now
        from multimodal.generation import save_image

        # The flags given override the checkpoint's defaults (its preset's, multimodal/presets.py).
        if args.unconditional:
            images = generator.iter_unconditional(args.num_samples, seed=args.seed, **cli.given(args, SamplingConfig))
        else:
            images = generator.iter_from_text(args.prompts, num_images_per_prompt=args.num_samples, seed=args.seed,
                                              use_diffusion=args.diffusion, negative_prompt=args.negative_prompt,
                                              init_image=args.init_image, strength=args.strength,
                                              **cli.given(args, SamplingConfig))
        for image, path in zip(images, paths):
            save_image(image, path, overwrite=True)  # output_paths already refused existing files
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
