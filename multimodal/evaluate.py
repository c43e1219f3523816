"""Measure a trained checkpoint on its data set's validation split.

The `multimodal-evaluate` command of an installed package, also `python -m multimodal.evaluate`; the
repository's evaluate.py calls the same `main`.

    python evaluate.py                                   # checkpoints/, else checkpoints/demo/
    python evaluate.py --checkpoint ck --limit 50 --steps 20   # a quick look

Shapes: retrieval over the canonical captions of the set's colours (180 for the standard set),
by cosine and with each query's 5 nearest reranked by the caption decoder; caption attribute
accuracy; text→image attribute accuracy with diffusion and with the fast path; against the
targets a working model must reach. Scenes: the same with two objects (both right: colour,
shape and place) over the 540 layouts, drawn as the checkpoint's preset draws (best of 8 for
scenes; flags override). Where training held some kinds out (shapes-holdout, scenes), every
metric also for the kinds training saw and those it never did. Any other data set (COCO or
any layout train.py reads): BLEU-4 and CIDEr-D of beam-3 captions against every caption of an
image (PTB-tokenised where Java runs, as papers), retrieval R@1/5/10 (and over 1k-image folds),
and text→image: FD and KID of pictures drawn for its captions against its images (EfficientNet-
Lite0 features; FID and KID with --fid-weights), R-precision and CLIP-score with the model's own
encoders; with the time per image of each. Karpathy's split (--data-format karpathy) is
measured on its 5,000 test images.
Prints a table and writes it to
<checkpoint>/evaluation.json (a --limit run to evaluation-limit-N.json, or to --output); a full run
also puts it in the checkpoint's model card (README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights come from installed packages, never the hub

from multimodal import cli, presets  # noqa: E402
from multimodal.config import DATA_FIELDS, InferenceConfig, SamplingConfig, TrainConfig, sampling_presets  # noqa: E402
from multimodal.model_card import write_model_card  # noqa: E402
from multimodal.errors import InvalidInputError  # noqa: E402
from multimodal.files import check_writable, input_overwritten, overlaps, write_text_atomically  # noqa: E402
from multimodal.paths import is_shard_spec  # noqa: E402
from multimodal.provenance import trained_data  # noqa: E402

RESULTS_NAME = "evaluation.json"
SHEET_COLUMNS = 8


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(
        description="Evaluate a checkpoint on the validation split (never training images): retrieval, "
        "captions and, on the built-in sets (shapes, scenes), text→image accuracy against their targets, for "
        "seen and unseen kinds apart where training held some out.\n"
        f"Prints a table and writes <checkpoint>/{RESULTS_NAME} (with --adapter, <adapter>/{RESULTS_NAME}).",
        epilog="examples:\n"
        "  python evaluate.py                                  # the full measure of checkpoints/ (or the demo's)\n"
        "  python evaluate.py --limit 50 --steps 20            # a quick look; kept apart from the full result\n"
        "  python evaluate.py --sheet sheet.png                # and a sheet of samples in both directions",
    )
    data = parser.add_argument_group("data and output")
    data.add_argument(
        "--data-dir",
        metavar="DIR",
        help="dataset folder in any layout train.py reads, or WebDataset shards (default: the data set the "
        "checkpoint was trained on, read as it was)",
    )
    skip = tuple(name for name in TrainConfig.field_names() if name not in DATA_FIELDS)
    cli.add_config_arguments(data, TrainConfig, skip=skip)
    data.add_argument("--batch-size", type=cli.positive_int, metavar="N", default=64,
                      help="images or prompts per batch (default: 64)")
    data.add_argument("--limit", type=cli.positive_int, metavar="N",
                      help="a quick look: only the first N validation images (and N text→image prompts)")
    data.add_argument("--output", type=Path, metavar="JSON",
                      help=f"where the results go (default: <checkpoint>/{RESULTS_NAME}; with --limit N, "
                      "<checkpoint>/evaluation-limit-N.json, so a quick look never replaces a full result)")
    data.add_argument("--sheet", type=Path, metavar="PNG",
                      help="also draw a sample sheet here (images generated for validation captions, and "
                      "validation images with their generated captions) and print three example captions")
    data.add_argument("--quiet", action="store_true", help="no progress bars (the results table is still printed)")
    photographs = parser.add_argument_group("photographs (COCO, Karpathy's split, any layout but the built-in sets)")
    photographs.add_argument("--split", choices=("val", "test"),
                             help="the split measured: val, or test where the layout has one (default: test for "
                             "--data-format karpathy, else val)")
    photographs.add_argument("--t2i-metrics", action=argparse.BooleanOptionalAction, default=None,
                             help="draw one picture per caption and measure them against the split's images: "
                             "FD/KID, R-precision and CLIP-score (default: on)")
    photographs.add_argument("--num-t2i", type=cli.positive_int, metavar="N",
                             help="captions to draw for, one picture each, with fixed seeds (default: one per "
                             "image evaluated, its first caption; more take each image's next caption)")
    photographs.add_argument("--fid-weights", type=Path, metavar="PTH",
                             help="the FID Inception-v3's weights (pt_inception-2015-12-05-6726825d.pth, the file "
                             "pytorch-fid and torchmetrics use): FID and KID as papers report them, instead of "
                             "FD_effnet and KID_effnet with ImageNet EfficientNet-Lite0")
    photographs.add_argument("--num-beams", type=cli.positive_int, metavar="N",
                             help="beam search width of the captions (default: 3 on photographs, as papers; 1, "
                             "greedy, on the built-in sets)")
    cli.add_config_arguments(parser, SamplingConfig, defaults=sampling_presets(),
                            group_titles={"": "text → image sampling"})
    cli.add_common_arguments(parser)
    return parser


def results_path(args: argparse.Namespace, checkpoint: Path) -> Path:
    if args.output:
        return args.output
    return checkpoint / (f"evaluation-limit-{args.limit}.json" if args.limit else RESULTS_NAME)


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
    cli.config_from_flags(parser, args, SamplingConfig)  # a bad value is a usage error before anything loads
    if args.t2i_metrics is False and (args.fid_weights or args.num_t2i):
        flag = "--fid-weights" if args.fid_weights else "--num-t2i"
        parser.error(f"{flag} is for the text→image metrics; leave it out with --no-t2i-metrics")
    checkpoint = cli.resolve_checkpoint_or_exit(parser, args.checkpoint, args.adapter)
    cli.check_device(parser, args.device)
    trained = Path(args.adapter) if args.adapter else checkpoint  # an adapter records its own data
    data_dir, options = trained_data(trained)
    trained_dir, trained_format = data_dir, options.get("data_format", "auto")
    if args.data_dir is None:
        if not (data_dir.is_dir() or is_shard_spec(data_dir)):
            parser.error(f"{trained} was trained on {data_dir}, which is not there; pass --data-dir DIR")
    else:
        data_dir, options = Path(args.data_dir), {}
        if not (data_dir.is_dir() or is_shard_spec(data_dir)):
            parser.error(f"--data-dir {data_dir} is not a folder")
    data = cli.build_config(parser, lambda: TrainConfig(**(options | cli.given(args, TrainConfig))), TrainConfig)
    # Where the results go is checked before anything loads: a table worked out, then lost, is the run lost.
    for flag, path in (("--output", results_path(args, trained)), ("--sheet", args.sheet)):
        try:
            if path is not None:
                check_writable(path)
        except InvalidInputError as error:
            default = f"{error} (where the results go; --output FILE puts them elsewhere)"
            parser.error(f"{flag}: {error}" if getattr(args, flag[2:]) else default)
        # Nothing this command reads is written over: the data set, or a file of the checkpoint
        # (its results, evaluation*.json, are the checkpoint's to hold).
        problem = path is not None and input_overwritten(path, {"the data set": data_dir if data_dir.is_dir() else None})
        if problem:
            parser.error(f"{flag} {problem}")
        if path is None or not path.is_file() or (flag == "--output" and path.name.startswith("evaluation")):
            continue
        read = next((folder for folder in (checkpoint, trained) if overlaps(path, folder)), None)
        if read is not None:
            parser.error(f"{flag} {path} is a file of {read}, which this command reads; choose another name")
    # The libraries load only once the arguments are good: --help and usage errors are instant.
    from multimodal.data import open_split
    from multimodal.data.builtin import builtin_params
    from multimodal.data.karpathy import coco_overlap
    from multimodal.data.layouts import resolve_format
    from multimodal.evaluation import (
        BUILTIN_DRIVERS,
        builtin_dataset_kind,
        check_targets,
        evaluate_captions,
        format_seconds_per_image,
        format_seen_unseen,
        format_table,
        format_targets,
        seconds_per_image,
    )
    from multimodal.evaluation.features import efficientnet_features, inception_features

    with cli.friendly_errors(parser.prog):
        # Images left out change what the numbers mean: say so (one line each).
        warnings.filterwarnings("always", message=".*(missing from|unreadable image)")
        from multimodal.generation import ImageTextGenerator

        layout = resolve_format(data_dir, data.data_format)
        split = args.split or ("test" if layout == "karpathy" else "val")
        if split == "test" and layout != "karpathy":
            parser.error(f"--split test: {data_dir} is in the {layout} layout, which has no test split (the karpathy "
                         "layout has; this one is measured on val)")
        fid_network = inception_features(args.fid_weights) if args.fid_weights else None  # a wrong file: said now
        inference = InferenceConfig(**cli.given(args, InferenceConfig))
        generator = ImageTextGenerator(checkpoint, device=args.device, adapter=args.adapter,
                                       precision=inference.precision)
        # The flags given override the checkpoint's defaults (its preset's, multimodal/presets.py).
        sampling = generator.sampling_config(**cli.given(args, SamplingConfig))
        val = open_split(data_dir, split, generator.model.config.image_size,
                         **{name: getattr(data, name) for name in DATA_FIELDS})
        computed_in = str(generator.dtype or "torch.float32").removeprefix("torch.")
        settings = {"limit": args.limit, "batch_size": args.batch_size, "device": str(generator.device),
                    "precision": inference.precision, "dtype": computed_in}
        seed = 0 if args.seed is None else args.seed
        with generator.computing():
            dataset = builtin_dataset_kind(val)
            if dataset is not None:
                # A built-in set is judged by its own kind's judge, against the targets of the
                # preset that draws it (as its params file records it).
                preset = presets.of_builtin_set(dataset, builtin_params(dataset, data_dir))
                targets = dict(preset.targets) if preset else {}
                if args.t2i_metrics or args.fid_weights or args.num_t2i:
                    parser.error(f"--t2i-metrics, --num-t2i and --fid-weights measure photographs; the {dataset} set's "
                                 "pictures are read back by its pixel reader: leave them out")
                num_beams = args.num_beams or 1
                settings |= {"sampling": sampling.to_dict(), "seed": seed, "num_beams": num_beams}
                metrics = BUILTIN_DRIVERS[dataset](
                    generator.model, val, batch_size=args.batch_size, sampling=sampling, seed=seed,
                    limit=args.limit, progress=not args.quiet, num_beams=num_beams,
                )
            else:
                dataset, targets = layout, {}
                overlap_ids = list(val.references)[: args.limit]
                seen = coco_overlap(overlap_ids, data_dir, data.data_format, trained_dir, trained_format)
                if seen:
                    cli.warn(parser, f"{seen} of the {len(overlap_ids)} images evaluated are training images of this "
                             f"checkpoint (the train split of {trained_dir}): their scores are inflated. COCO's "
                             "train2017 holds most of Karpathy's test split; train on --data-format karpathy "
                             "(train + restval) to measure on its test images")
                features = None
                if args.t2i_metrics is not False:
                    features = fid_network or efficientnet_features()
                    features.network.to(generator.device)
                    settings |= {"sampling": sampling.to_dict(), "seed": seed, "features": features.name}
                num_beams = args.num_beams or 3
                settings |= {"split": split, "num_beams": num_beams}
                metrics = evaluate_captions(generator.model, val, batch_size=args.batch_size, limit=args.limit,
                                            progress=not args.quiet, num_beams=num_beams, features=features,
                                            num_t2i=args.num_t2i, sampling=sampling, seed=seed)

    adapted = f" with the adapter {args.adapter}" if args.adapter else ""
    part = "test" if settings.get("split") == "test" else "validation"
    print(f"{dataset} {part} split of {data_dir}, checkpoint {generator.checkpoint_dir}{adapted}")
    if "sampling" in settings:
        print(f"text → image: {sampling.describe()}")
    print(format_table(metrics))
    if "features" in settings:
        fid = "" if args.fid_weights else " (not FID: --fid-weights gives FID comparable with papers)"
        print(f"FD and KID on {settings['features']}{fid}; R-precision and CLIP-score with this model's own "
              "encoders, not CLIP's or AttnGAN's DAMSM")
    per_image = seconds_per_image(metrics)
    print()
    print(format_seconds_per_image(per_image))
    if format_seen_unseen(metrics):
        print()
        print(format_seen_unseen(metrics))
    if targets:
        print()
        print(format_targets(metrics, targets))
        if args.limit:
            print(f"(a quick look at {metrics['images']} of {len(val)} images and {metrics['prompts']} "
                  "text→image prompts, not the full measure)")
    met = check_targets(metrics, targets)
    results = {
        "checkpoint": str(generator.checkpoint_dir),
        "adapter": args.adapter and str(Path(args.adapter).absolute()),
        "data_dir": str(data_dir),
        "dataset": dataset,
        "settings": settings,
        "metrics": metrics,
        "seconds_per_image": per_image,
        "targets": {name: {"goal": goal, "met": met[name]} for name, goal in targets.items()},
    }
    path = results_path(args, trained)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, json.dumps(results, indent=2) + "\n")
    except OSError as error:
        print(f"{parser.prog}: error: cannot write {path}: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    # The card shows the full measure of this checkpoint on its own data: a quick look, another
    # data set or an adapter's results never replace it.
    if not (args.limit or args.data_dir or args.adapter):
        try:
            card = write_model_card(generator.checkpoint_dir, results)
            print(f"wrote {card} (the model card, with this table)")
        except OSError as error:
            cli.warn(parser, f"cannot update the model card of {generator.checkpoint_dir}: {error}")
    if args.sheet:
        with cli.friendly_errors(parser.prog):
            with generator.computing():
                write_sheet(generator.model, val, args.sheet, sampling, seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
