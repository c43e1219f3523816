"""`python -m multimodal.data DIR`: write a shapes set, e.g. one of a new colour to fine-tune on."""

from __future__ import annotations

from pathlib import Path

from multimodal import cli
from multimodal.config import ShapesConfig
from multimodal.data.shapes import generate_shapes_dataset, parse_colors
from multimodal.errors import DatasetLayoutError


def main(argv: list[str] | None = None) -> int:
    """`python -m multimodal.data DIR [--colors orange --num-train 600 …]`: write a set."""
    parser = cli.ArgumentParser(
        prog="python -m multimodal.data",
        description="Write a shapes set in COCO layout (train.py --preset shapes makes the standard one itself).",
        epilog="example:\n  python -m multimodal.data data/shapes-orange --colors orange --num-train 600 --num-val 120",
    )
    parser.add_argument("folder", type=Path, help="where the set goes (a new or empty folder, or an earlier shapes set)")
    cli.add_config_arguments(parser, ShapesConfig)
    args = parser.parse_args(argv)
    config = cli.build_config(parser, lambda: ShapesConfig(**cli.given(args, ShapesConfig)), ShapesConfig)
    colors = cli.build_config(parser, lambda: parse_colors(config.colors), ShapesConfig)
    try:
        generate_shapes_dataset(args.folder, config.num_train, config.num_val, config.image_size, config.seed, colors)
    except (DatasetLayoutError, OSError) as error:
        parser.error(str(error))
    print(args.folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
