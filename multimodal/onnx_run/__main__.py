"""`python -m multimodal.onnx_run EXPORT_DIR PROMPT... [--output PATH]` draws, and
`python -m multimodal.onnx_run EXPORT_DIR --caption IMAGE...` captions, with an ONNX export
(see `multimodal.onnx_run`); no torch."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from multimodal import cli
from multimodal.config import SamplingConfig
from multimodal.errors import InvalidInputError
from multimodal.images import image_file_names, image_format, save_image
from multimodal.onnx_run import OnnxGenerator


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="python -m multimodal.onnx_run",
        description="Draw images from prompts, or caption images, with an ONNX export and ONNX Runtime "
        "(no PyTorch). DDIM with guidance; greedy captions.",
        epilog="examples:\n"
        '  python -m multimodal.onnx_run onnx/ "a large red circle on the left" --output circle.png --seed 0\n'
        '  python -m multimodal.onnx_run onnx/ "a red circle" --negative-prompt "a blue square" --seed 0\n'
        "  python -m multimodal.onnx_run onnx/ --caption circle.png",
    )
    parser.add_argument("export_dir", metavar="EXPORT_DIR", help="a folder written by python -m multimodal.export")
    parser.add_argument("prompts", nargs="*", type=cli.prompt, metavar="PROMPT", help="what to draw")
    parser.add_argument("--caption", nargs="+", metavar="IMAGE", help="caption these image files instead")
    parser.add_argument("--output", metavar="PATH",
                        help="the image file (default generated.png), or a folder ending in / for several prompts")
    parser.add_argument("--overwrite", action="store_true", help="replace files that already exist")
    parser.add_argument("--seed", type=cli.seed, metavar="N", help="seed of numpy's starting noise")
    parser.add_argument("--negative-prompt", type=cli.prompt, metavar="TEXT",
                        help="what guidance steers away from, instead of no text (for every prompt)")
    cli.add_config_arguments(parser, SamplingConfig, skip=("sampler", "eta", "guidance_rescale", "num_candidates"),
                             group_titles={"": "sampling (DDIM)"})
    return parser


def output_paths(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[Path]:
    """Where each prompt's picture goes, checked before any work."""
    text = args.output or "generated.png"
    if text.endswith(("/", "\\")) or Path(text).is_dir():
        paths = [Path(text) / row[0] for row in image_file_names(args.prompts, 1)]
    elif len(args.prompts) > 1:
        parser.error(f"--output {text} names one file, but {len(args.prompts)} prompts are given: give a folder (end it with /)")
    else:
        paths = [Path(text)]
    try:
        image_format(paths[0])
    except InvalidInputError as error:
        parser.error(str(error))
    existing = [path for path in paths if path.exists()]
    if existing and not args.overwrite:
        parser.error(f"{existing[0]} already exists; pass --overwrite to replace it")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.prompts) == bool(args.caption):
        parser.error("give prompts to draw, or --caption IMAGE to caption, not both" if args.prompts else
                     "give a prompt to draw, or --caption IMAGE")
    if args.caption and args.negative_prompt is not None:
        parser.error("--negative-prompt steers drawing; --caption does not draw")
    sampling = cli.config_from_flags(parser, args, SamplingConfig)
    paths = output_paths(parser, args) if args.prompts else []
    try:
        generator = OnnxGenerator(args.export_dir)
        if args.caption:
            for image, text in zip(args.caption, generator.caption(args.caption)):
                print(f"{image}: {text}")
            return 0
        from PIL import Image

        for path, pixels in zip(paths, generator.draw(args.prompts, sampling, seed=args.seed,
                                                    negative_prompts=[args.negative_prompt or ""] * len(args.prompts))):
            print(save_image(Image.fromarray(pixels), path, overwrite=True))
    except (InvalidInputError, OSError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
