"""`python -m multimodal.export CHECKPOINT OUT_DIR [--overwrite] [--precision fp32|fp16]`: a
checkpoint exported to ONNX (see `multimodal.export`), one line per graph with its largest
difference from PyTorch."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from multimodal import cli
from multimodal.config import ExportConfig
from multimodal.export import export
from multimodal.paths import EXPORT_NAME


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="python -m multimodal.export",
        description="Export a checkpoint to ONNX graphs plus export.json, checked against PyTorch with "
        "ONNX Runtime; python -m multimodal.onnx_run runs them without PyTorch.",
        epilog="example:\n  python -m multimodal.export checkpoints/demo onnx/\n"
        '  python -m multimodal.onnx_run onnx/ "a large red circle on the left" --output circle.png',
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint folder, or a training run folder")
    parser.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="folder to write the export into")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export in OUT_DIR")
    cli.add_config_arguments(parser, ExportConfig)
    return parser


def check_out_dir(parser: argparse.ArgumentParser, out_dir: Path, overwrite: bool) -> None:
    """OUT_DIR must be new, or an earlier export (or empty) with --overwrite: nothing else is replaced."""
    if out_dir.exists() and not out_dir.is_dir():
        parser.error(f"OUT_DIR {out_dir} is a file")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            parser.error(f"{out_dir} already exists; pass --overwrite to replace it")
        if not (out_dir / EXPORT_NAME).is_file():
            parser.error(f"{out_dir} holds files that are not an export (no {EXPORT_NAME}); "
                         "--overwrite replaces only an earlier export: choose another OUT_DIR")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = ExportConfig(**cli.given(args, ExportConfig))
    checkpoint = cli.resolve_checkpoint_or_exit(parser, args.checkpoint)
    check_out_dir(parser, args.out_dir, args.overwrite)
    with cli.friendly_errors(parser.prog):
        description = export(checkpoint, args.out_dir, settings.precision)  # torch loads only now
    for name, difference in description["largest_difference_from_pytorch"].items():
        print(f"{name}.onnx: largest difference from PyTorch {max(difference.values()):.1e} (random and real inputs)")
    print(f"wrote {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
