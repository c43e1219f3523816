"""Image → text from the command line.

    python generate_i2t.py photo.jpg other.png                  # "path: caption" lines
    python generate_i2t.py photo.jpg --num-captions 3 --top-p 0.9 --seed 0 --json
"""

from __future__ import annotations

import argparse
import json
import sys

from multimodal import cli
from multimodal.config import DEFAULT_MAX_NEW_TOKENS


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(
        description="Caption images with a trained checkpoint. Greedy by default; --num-beams for "
        "beam search; --temperature, --top-k or --top-p (or several captions without beams) sample."
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format and mode PIL reads)")
    parser.add_argument(
        "--num-captions", type=cli.positive_int, metavar="N", default=1, help="captions per image (default 1)"
    )
    parser.add_argument("--temperature", type=cli.positive_float, metavar="F", help="sampling temperature, e.g. 0.8")
    parser.add_argument("--top-k", type=cli.positive_int, metavar="N", help="sample among the N likeliest tokens")
    parser.add_argument("--top-p", type=cli.probability, metavar="F", help="sample within this probability mass")
    parser.add_argument(
        "--repetition-penalty", type=cli.positive_float, metavar="F", help="above 1 discourages repeats, e.g. 1.3"
    )
    parser.add_argument(
        "--num-beams", type=cli.positive_int, metavar="N", default=1, help="beam width; 1 is greedy (default 1)"
    )
    parser.add_argument(
        "--max-new-tokens",
        type=cli.positive_int,
        metavar="N",
        default=DEFAULT_MAX_NEW_TOKENS,
        help=f"longest caption in tokens (default: {DEFAULT_MAX_NEW_TOKENS})",
    )
    parser.add_argument(
        "--json", action="store_true", help='print one JSON list of {"image": path, "captions": [...]} instead'
    )
    cli.add_common_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    checkpoint = cli.resolve_checkpoint_or_exit(parser, args.checkpoint)
    with cli.friendly_errors(parser.prog):
        from multimodal.generation import ImageTextGenerator  # torch loads only now

        generator = ImageTextGenerator(checkpoint, device=args.device)
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
