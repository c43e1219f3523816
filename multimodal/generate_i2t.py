"""Image → text from the command line.

The `multimodal-i2t` command of an installed package, also `python -m multimodal.generate_i2t`; the
repository's generate_i2t.py calls the same `main`.

    python generate_i2t.py photo.jpg other.png                  # "path: caption" lines
    python generate_i2t.py photo.jpg --num-captions 3 --top-p 0.9 --seed 0 --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from multimodal import cli
from multimodal.config import DEFAULT_MAX_NEW_TOKENS


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(
        description="Caption images with a trained checkpoint. Greedy by default; --num-beams for beam search; "
        "--temperature, --top-k or --top-p (or several captions without beams) sample.",
        epilog="examples:\n"
        "  python generate_i2t.py photo.jpg\n"
        "  python generate_i2t.py photo.jpg --num-beams 3\n"
        "  python generate_i2t.py photo.jpg --num-captions 3 --top-p 0.9 --temperature 0.8 --seed 0 --json",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format and mode PIL reads)")
    decoding = parser.add_argument_group("decoding (transformers' GenerationConfig)")
    decoding.add_argument("--num-captions", type=cli.positive_int, metavar="N", default=1,
                          help="captions per image (default: 1)")
    decoding.add_argument("--num-beams", type=cli.positive_int, metavar="N", default=1,
                          help="beam width; 1 is greedy (default: 1)")
    decoding.add_argument("--temperature", type=cli.positive_float, metavar="F",
                          help="sample, at this temperature (e.g. 0.8; default: no sampling)")
    decoding.add_argument("--top-k", type=cli.positive_int, metavar="N",
                          help="sample among the N likeliest tokens (default: no sampling)")
    decoding.add_argument("--top-p", type=cli.probability, metavar="F",
                          help="sample within this probability mass (default: no sampling)")
    decoding.add_argument("--repetition-penalty", type=cli.positive_float, metavar="F",
                          help="above 1 discourages repeats, e.g. 1.3 (default: 1, none)")
    decoding.add_argument("--max-new-tokens", type=cli.positive_int, metavar="N", default=DEFAULT_MAX_NEW_TOKENS,
                          help=f"longest caption in tokens (default: {DEFAULT_MAX_NEW_TOKENS})")
    output = parser.add_argument_group("output")
    output.add_argument("--json", action="store_true",
                        help='print one JSON list of {"image": path, "captions": [...]} instead of "path: caption" lines')
    cli.add_common_arguments(parser)
    cli.add_run_arguments(parser)
    return parser


def samples(args: argparse.Namespace) -> bool:
    """Whether these options sample (the only decoding a seed changes)."""
    sampling_options = (args.temperature, args.top_k, args.top_p)
    return any(value is not None for value in sampling_options) or (args.num_captions > 1 and args.num_beams == 1)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for image in args.images:  # found now, not after the seconds it takes to load the model
        path = Path(image)
        if path.is_dir():
            parser.error(f"{image} is a folder, not an image file")
        if not path.is_file():
            parser.error(f"no such image file: {image}")
    if args.num_beams > 1 and args.num_captions > args.num_beams:
        parser.error(f"--num-captions {args.num_captions} needs --num-beams {args.num_captions} or more "
                     f"(beam search returns at most --num-beams captions)")
    if args.seed is not None and not samples(args):
        cli.warn(parser, "--seed changes nothing here: greedy and beam search draw no random numbers")
    checkpoint = cli.prepare_generation(parser, args)
    with cli.friendly_errors(parser.prog):
        generator = cli.load_generator(args, checkpoint)  # torch loads only now
        captions = generator.generate_from_image(
            args.images,
            num_captions_per_image=args.num_captions,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            repetition_penalty=args.repetition_penalty,
            num_beams=args.num_beams,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
        )
    if args.json:
        results = [{"image": path, "captions": texts} for path, texts in zip(args.images, captions)]
        print(json.dumps(results, ensure_ascii=False, indent=2))
    else:
        for path, texts in zip(args.images, captions):
            for text in texts:
                print(f"{path}: {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
