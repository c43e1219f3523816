"""Text → image from the command line.

The `multimodal-t2i` command of an installed package, also `python -m multimodal.generate_t2i`; the
repository's generate_t2i.py calls the same `main`.

    python generate_t2i.py "a large red circle on the left"                    # → generated.png
    python generate_t2i.py "a red circle" "a blue square" --num-samples 4 --output out/
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from multimodal import cli
from multimodal.config import InferenceConfig, SamplingConfig, sampling_presets
from multimodal.config.sampling import IMAGE_BATCH
from multimodal.errors import InvalidInputError
from multimodal.files import check_writable
from multimodal.images import image_file_names, image_format

DEFAULT_FILE = Path("generated.png")
DEFAULT_FOLDER = Path("generated")


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(
        description="Draw images from text prompts with a trained checkpoint.",
        epilog="examples:\n"
        '  python generate_t2i.py "a large red circle on the left" --seed 0\n'
        '  python generate_t2i.py "a red circle" "a blue square" --num-samples 4 --output out/\n'
        '  python generate_t2i.py "a red circle" --steps 20 --sampler dpm --guidance-scale 5\n'
        '  python generate_t2i.py "a red circle" --no-diffusion       # fast preview',
    )
    parser.add_argument("prompts", nargs="+", type=cli.prompt, metavar="PROMPT", help="what to draw")
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
    cli.add_config_arguments(parser, SamplingConfig, defaults=sampling_presets(), group_titles={"": "sampling"})
    cli.add_common_arguments(parser)
    cli.add_run_arguments(parser)
    return parser


def check_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Options that would change nothing are refused (or, when harmless, warned about once)."""
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
    count = len(args.prompts) * args.num_samples
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
        names = image_file_names(args.prompts, args.num_samples)
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
    checkpoint = cli.resolve_checkpoint_or_exit(parser, args.checkpoint, args.adapter)
    cli.check_device(parser, args.device)
    cli.set_thread_policy(args.threads)
    with cli.friendly_errors(parser.prog):
        from multimodal.generation import ImageTextGenerator, save_image  # torch loads only now

        cli.set_threads(args.threads)
        inference = InferenceConfig(**cli.given(args, InferenceConfig))
        generator = ImageTextGenerator(checkpoint, device=args.device, progress=not args.quiet,
                                       adapter=args.adapter, precision=inference.precision)
        # The flags given override the checkpoint's defaults (its preset's, multimodal/presets.py).
        images = generator.iter_from_text(args.prompts, num_images_per_prompt=args.num_samples, seed=args.seed,
                                          use_diffusion=args.diffusion, negative_prompt=args.negative_prompt,
                                          **cli.given(args, SamplingConfig))
        for image, path in zip(images, paths):
            save_image(image, path, overwrite=True)  # output_paths already refused existing files
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
