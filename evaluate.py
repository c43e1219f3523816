"""Measure a trained checkpoint on its data set's validation split.

    python evaluate.py --checkpoint checkpoints                  # best/, else latest/
    python evaluate.py --checkpoint ck/best --limit 50 --steps 20  # a quick look

Shapes: retrieval over the 180 canonical captions, caption attribute accuracy, and text→image
attribute accuracy with diffusion and with the fast path, against the targets a working model
must reach. COCO: BLEU-4, CIDEr and retrieval R@1/5/10. Prints a table and writes it to
<checkpoint>/evaluation.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights come from installed packages, never the hub

from multimodal import cli  # noqa: E402
from multimodal.config import SamplingConfig, default_data_dir  # noqa: E402
from multimodal.paths import read_trainer_state  # noqa: E402

RESULTS_NAME = "evaluation.json"
SHEET_COLUMNS = 8


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(
        description="Evaluate a checkpoint on the validation split (never training images): retrieval, "
        "captions and, on the shapes set, text→image attribute accuracy against its targets. "
        f"Prints a table and writes <checkpoint>/{RESULTS_NAME}."
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="dataset root in COCO layout (default: the one the checkpoint was trained on, else data/shapes)",
    )
    cli.add_config_arguments(parser, SamplingConfig, skip=("use_diffusion",), group_titles={"": "text → image sampling"})
    parser.add_argument("--batch-size", type=cli.positive_int, metavar="N", default=64,
                        help="images or prompts per batch (default 64)")
    parser.add_argument("--limit", type=cli.positive_int, metavar="N",
                        help="evaluate only the first N validation images (and N text→image prompts)")
    parser.add_argument("--sheet", type=Path, metavar="PNG",
                        help="also draw a sample sheet here (images generated for validation captions, and "
                        "validation images with their generated captions) and print three example captions")
    cli.add_common_arguments(parser)
    return parser


def trained_data_dir(checkpoint: Path) -> Path:
    """The data set the checkpoint was trained on, as its trainer state records it (an
    absolute path since this version; older runs record the preset, or nothing: shapes)."""
    state = read_trainer_state(checkpoint) or {}
    train_config = state.get("train_config") if isinstance(state.get("train_config"), dict) else {}
    if train_config.get("data_dir"):
        return Path(train_config["data_dir"])
    return default_data_dir(train_config.get("preset", "shapes"))


def write_sheet(model, val, path: Path, sampling: SamplingConfig, seed: int) -> None:
    """Eight validation images spread over the split: their captions as prompts on top, the
    images with the captions the model writes for them below."""
    import torch

    from multimodal.training.samples import write_sample_sheet

    # A stride of 77 walks through positions, sizes, colours and shapes alike.
    items = [val[(i * 77) % len(val)] for i in range(min(SHEET_COLUMNS, len(val)))]
    images = torch.stack([item["image"] for item in items]).to(model.device)
    prompts = [item["caption"] for item in items]
    captions = write_sample_sheet(model, prompts, images, path, sampling, seed)
    print(f"sample sheet: {path}")
    for item, caption in list(zip(items, captions))[:3]:
        print(f"  validation image {item['image_id']}: {caption!r}   (reference: {item['caption']!r})")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    sampling = cli.build_config(parser, lambda: SamplingConfig(**cli.given(args, SamplingConfig)), SamplingConfig)
    checkpoint = cli.resolve_checkpoint_or_exit(parser, args.checkpoint)
    # The libraries load only once the arguments are good: --help and usage errors are instant.
    from multimodal.data import CocoCaptionDataset, DatasetLayoutError
    from multimodal.evaluation import (
        SHAPES_TARGETS,
        check_targets,
        evaluate_coco,
        evaluate_shapes,
        format_table,
        format_targets,
        is_shapes_dataset,
    )

    try:
        with cli.friendly_errors(parser.prog):
            # Images left out change what the numbers mean: say so (one line each).
            warnings.filterwarnings("always", message=".*(missing from|unreadable image)")
            from multimodal.generation import ImageTextGenerator

            generator = ImageTextGenerator(checkpoint, device=args.device)
            data_dir = Path(args.data_dir) if args.data_dir else trained_data_dir(generator.checkpoint_dir)
            val = CocoCaptionDataset(data_dir, "val", generator.model.config.image_size)
            settings = {"limit": args.limit, "batch_size": args.batch_size, "device": str(generator.device)}
            seed = 0 if args.seed is None else args.seed
            if is_shapes_dataset(val):
                dataset, targets = "shapes", SHAPES_TARGETS
                settings |= {"sampling": sampling.to_dict(), "seed": seed}
                metrics = evaluate_shapes(
                    generator.model, val, batch_size=args.batch_size, sampling=sampling, seed=seed,
                    limit=args.limit, progress=True,
                )
            else:
                dataset, targets = "coco", {}
                metrics = evaluate_coco(generator.model, val, batch_size=args.batch_size, limit=args.limit,
                                        progress=True)
    except DatasetLayoutError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2

    print(f"{dataset} validation split of {data_dir}, checkpoint {generator.checkpoint_dir}")
    print(format_table(metrics))
    if targets:
        print()
        print(format_targets(metrics, targets))
    met = check_targets(metrics, targets)
    results = {
        "checkpoint": str(generator.checkpoint_dir),
        "data_dir": str(data_dir),
        "dataset": dataset,
        "settings": settings,
        "metrics": metrics,
        "targets": {name: {"goal": goal, "met": met[name]} for name, goal in targets.items()},
    }
    path = generator.checkpoint_dir / RESULTS_NAME
    try:
        path.write_text(json.dumps(results, indent=2) + "\n")
    except OSError as error:
        print(f"{parser.prog}: error: cannot write {path}: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    if args.sheet:
        with cli.friendly_errors(parser.prog):
            write_sheet(generator.model, val, args.sheet, sampling, seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
