"""Look inside a training run: its loss curves, reconstructions, latent, sampling and embeddings.

The `multimodal-visualize` command of an installed package, also `python -m multimodal.visualize`; the
repository's visualize.py calls the same `main`.

    python visualize.py checkpoints/                       # → checkpoints/visualize/*.png
    python visualize.py checkpoints/coco --prompt "a dog on a beach" --embedding-map tsne

Reads the run folder's metrics.csv and its checkpoint (best/, else latest/), and the
validation split of the data set it was trained on; prints the path of each PNG it writes.
"""

from __future__ import annotations

import argparse
import os
import sys
from itertools import islice
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights come from installed packages, never the hub

from multimodal import cli  # noqa: E402
from multimodal.config import DATA_FIELDS, SamplingConfig, TrainConfig, VisualizeConfig  # noqa: E402
from multimodal.errors import CheckpointError  # noqa: E402
from multimodal.paths import METRICS_NAME, is_shard_spec, resolve_checkpoint  # noqa: E402
from multimodal.provenance import trained_data  # noqa: E402

OUTPUT_NAME = "visualize"  # the PNGs' folder inside the run, unless --output-dir says otherwise


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(
        description="Draw a training run as PNGs: loss curves per stage, validation images beside their "
        "reconstructions, per-channel latent statistics, the denoising trajectory of one prompt, a 2-D map of "
        "validation image and text embeddings, and the codebook's usage where the run has one.",
        epilog="examples:\n"
        "  python visualize.py checkpoints/\n"
        '  python visualize.py checkpoints/coco --prompt "a dog on a beach" --embedding-map tsne --steps 20',
    )
    parser.add_argument("run", metavar="RUN_DIR", type=Path,
                        help=f"a folder train.py wrote (--output-dir): its {METRICS_NAME} and best/ or latest/")
    cli.add_config_arguments(parser, VisualizeConfig)
    cli.add_config_arguments(parser, SamplingConfig, skip=("use_diffusion", "num_candidates"),
                             group_titles={"": "the trajectory's sampling"})
    cli.add_run_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    config = cli.config_from_flags(parser, args, VisualizeConfig)
    sampling = cli.config_from_flags(parser, args, SamplingConfig)
    if not args.run.is_dir():
        parser.error(f"RUN_DIR {args.run} is not a folder")
    if not (args.run / METRICS_NAME).is_file():
        parser.error(f"RUN_DIR {args.run} has no {METRICS_NAME}: give the folder train.py wrote (its --output-dir)")
    try:
        checkpoint = resolve_checkpoint(args.run)
    except CheckpointError as error:
        parser.error(f"RUN_DIR {error}")
    data_dir, options = trained_data(checkpoint)
    if config.data_dir is not None:
        data_dir, options = Path(config.data_dir), {}
    if not (data_dir.is_dir() or is_shard_spec(data_dir)):
        parser.error(f"{args.run} was trained on {data_dir}, which is not there; pass --data-dir DIR")
    data = TrainConfig(**options)
    cli.check_device(parser, config.device)
    cli.set_thread_policy(args.threads)

    # The libraries load only once the arguments are good: --help and usage errors are instant.
    import pandas as pd
    import torch

    from multimodal import plots
    from multimodal import visualization as draw
    from multimodal.data import open_split
    from multimodal.device import pick_device
    from multimodal.models import GenerativeMultimodalModel

    cli.set_threads(args.threads)
    output = Path(config.output_dir) if config.output_dir else args.run / OUTPUT_NAME
    with cli.friendly_errors(parser.prog):
        history = pd.read_csv(args.run / METRICS_NAME)
        model = GenerativeMultimodalModel.from_pretrained(checkpoint, pick_device(config.device))
        val = open_split(data_dir, "val", model.config.image_size, **{name: getattr(data, name) for name in DATA_FIELDS})
        items = list(islice((val[i] for i in range(len(val))) if hasattr(val, "__len__") else val, config.map_images))
        images = torch.stack([item["image"] for item in items]).to(model.device)
        captions = [item["caption"] for item in items]
        output.mkdir(parents=True, exist_ok=True)
        written = [
            plots.loss_curves(history, output / "loss_curves.png"),
            plots.codebook_curves(history, output / "codebook.png"),
            draw.reconstructions(model, images[: config.num_images], output / "reconstructions.png"),
            draw.latent_statistics(model, images, output / "latent_statistics.png"),
            draw.denoising_trajectory(model, config.prompt or captions[0], sampling, config.trajectory_frames,
                                      config.seed, output / "denoising_trajectory.png"),
            draw.embedding_map(model, images, captions, config.embedding_map, config.seed,
                               output / f"embedding_map_{config.embedding_map}.png"),
        ]
    for path in written:
        if path is not None:
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
