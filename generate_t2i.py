"""Text → image from the command line.

    python generate_t2i.py "a large red circle on the left"                    # → generated.png
    python generate_t2i.py "a red circle" "a blue square" --num-samples 4 --output out/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from multimodal import cli
from multimodal.config import DEFAULT_GUIDANCE_SCALE, DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description="Draw images from text prompts with a trained checkpoint.")
    parser.add_argument("prompts", nargs="+", type=cli.prompt, metavar="PROMPT", help="what to draw (any language)")
    parser.add_argument(
        "--output",
        type=Path,
        metavar="PATH",
        help="PNG file for one image (default generated.png); for several images, the folder "
        "they go in, named <prompt>_<sample>.png (default generated/)",
    )
    parser.add_argument(
        "--num-samples", type=cli.positive_int, metavar="N", default=1, help="images per prompt (default 1)"
    )
    parser.add_argument(
        "--steps",
        type=cli.positive_int,
        metavar="N",
        default=DEFAULT_STEPS,
        help=f"denoising steps (default {DEFAULT_STEPS}; 10-20 for a preview, up to 100 for the best)",
    )
    parser.add_argument(
        "--guidance-scale",
        type=cli.non_negative_float,
        metavar="F",
        default=DEFAULT_GUIDANCE_SCALE,
        help=f"how closely to follow the prompt: 1 conditional only, 0 ignores it (default {DEFAULT_GUIDANCE_SCALE})",
    )
    parser.add_argument(
        "--sampler", choices=SAMPLERS, default=DEFAULT_SAMPLER, help=f"diffusion sampler (default {DEFAULT_SAMPLER})"
    )
    parser.add_argument(
        "--eta",
        type=cli.non_negative_float,
        metavar="F",
        default=0.0,
        help="DDIM noise: 0 deterministic, 1 like DDPM (default 0)",
    )
    parser.add_argument(
        "--no-diffusion", action="store_true", help="fast preview: decode straight from the text embedding"
    )
    cli.add_common_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    count = len(args.prompts) * args.num_samples
    if count > 1 and args.output and args.output.suffix.lower() == ".png" and not args.output.is_dir():
        parser.error(f"--output {args.output} names one PNG file, but {count} images are asked for: give a folder")
    with cli.friendly_errors(parser.prog):
        from multimodal.generation import save_images  # torch loads only once the arguments are good

        generator = cli.load_generator(args)
        images = generator.generate_from_text(
            args.prompts,
            num_samples_per_prompt=args.num_samples,
            use_diffusion=not args.no_diffusion,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance_scale,
            seed=args.seed,
            sampler=args.sampler,
            eta=args.eta,
        )
        one_file = count == 1 and not (args.output and args.output.is_dir())
        if one_file:
            path = args.output or Path("generated.png")
            path.parent.mkdir(parents=True, exist_ok=True)
            images[0][0].save(path, format="PNG")
            paths = [path]
        else:
            paths = save_images(images, args.prompts, args.output or Path("generated"))
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
