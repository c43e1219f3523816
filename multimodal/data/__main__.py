"""`python -m multimodal.data check DIR`, `… convert SRC DST --to FORMAT` and `… shapes DIR`.

check: names the layout, counts images and captions, and lists every problem with its file
and line; exit 0 when the set would train, 2 when it would not. convert: writes any layout as
an image folder, WebDataset shards or parquet files (the Hub's layout). shapes: writes a shapes
set, e.g. one of a new colour to fine-tune on. Bad input: one line, exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tokenizer comes from an installed package

from multimodal import cli  # noqa: E402
from multimodal.config import DATA_FIELDS, ShapesConfig, TrainConfig  # noqa: E402
from multimodal.data.convert import TARGETS  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="python -m multimodal.data",
        description="Check a data set before training on it, or convert it to another layout.",
        epilog="examples:\n"
        "  python -m multimodal.data check data/my-captions\n"
        "  python -m multimodal.data convert data/coco2017 data/coco-shards --to webdataset --shard-size 1000\n"
        "  python -m multimodal.data convert data/coco2017 data/coco-parquet --to parquet\n"
        "  python -m multimodal.data shapes data/shapes-orange --colors orange --num-train 600 --num-val 120",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=cli.ArgumentParser)
    skip = tuple(name for name in TrainConfig.field_names() if name not in DATA_FIELDS)
    check = commands.add_parser("check", help="name the layout, count images and captions, list every problem")
    check.add_argument("data_dir", metavar="DIR", help="the data set: a folder (of any layout, parquet files "
                       "included), or WebDataset shards")
    check.add_argument("--no-open-images", dest="open_images", action="store_false",
                       help="skip opening every image (the slow check)")
    cli.add_config_arguments(check, TrainConfig, skip=skip)
    convert = commands.add_parser("convert", help="write a data set (any layout) as an image folder, shards or parquet")
    convert.add_argument("source", metavar="SRC", help="the data set to read, in any layout")
    convert.add_argument("destination", metavar="DST", help="the folder to write (must not exist)")
    convert.add_argument("--to", required=True, choices=TARGETS, help="the layout to write")
    convert.add_argument("--shard-size", type=cli.positive_int, default=1000, metavar="N",
                         help="samples per WebDataset shard, or rows per parquet file (default: 1000)")
    cli.add_config_arguments(convert, TrainConfig, skip=skip)
    shapes = commands.add_parser(
        "shapes", help="write a shapes set in COCO layout (train.py --preset shapes makes the standard one itself)"
    )
    shapes.add_argument("folder", metavar="DIR", help="where the set goes (a new or empty folder, or an earlier "
                        "shapes set)")
    cli.add_config_arguments(shapes, ShapesConfig)
    return parser


def write_shapes(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    config = cli.config_from_flags(parser, args, ShapesConfig)
    from multimodal.data.shapes import generate_shapes_dataset, parse_colors
    from multimodal.errors import DatasetLayoutError

    colors = cli.build_config(parser, lambda: parse_colors(config.colors), ShapesConfig)
    try:
        generate_shapes_dataset(args.folder, config.num_train, config.num_val, config.image_size, config.seed,
                                holdout=config.holdout, colors=colors)
    except (DatasetLayoutError, OSError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    print(args.folder)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "shapes":
        return write_shapes(parser, args)
    config = cli.config_from_flags(parser, args, TrainConfig)
    options = {name: getattr(config, name) for name in DATA_FIELDS}
    from multimodal.errors import DatasetLayoutError

    if args.command == "check":
        from multimodal.data.check import check, format_report

        report = check(args.data_dir, open_images=args.open_images, **options)
        print(format_report(args.data_dir, report, config.data_format))
        return 0 if report.trains else 2
    from multimodal.data.convert import convert

    try:
        counts = convert(args.source, args.destination, args.to, shard_size=args.shard_size, **options)
    except (DatasetLayoutError, OSError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.destination}: " + ", ".join(f"{n} {split} images" for split, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
