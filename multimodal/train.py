"""Train the GenerativeMultimodalModel on COCO captions or the built-in shapes set.

The `multimodal-train` command of an installed package, also `python -m multimodal.train`; the
repository's train.py calls the same `main`.

    python train.py --preset shapes                 # built-in data, no download
    python train.py                                 # COCO 2017 in data/coco/coco2017
    python train.py --preset shapes --resume        # continue from checkpoints/latest
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights come from installed packages, never the hub

from multimodal import cli, presets  # noqa: E402
from multimodal.config import ModelConfig, TrainConfig, model_preset, train_preset  # noqa: E402
from multimodal.config.model import new_diffusion_config  # noqa: E402
from multimodal.config.training import read_run_config  # noqa: E402
from multimodal.files import input_overwritten  # noqa: E402
from multimodal.paths import is_shard_spec  # noqa: E402

MODEL_GROUPS = {group: f"model: {group}" for group in ("images", "text", "caption decoder", "diffusion", "losses")}
TRAIN_GROUPS = {"data": "data", "schedule": "schedule", "autoencoder": "the autoencoder stage",
                "output": "checkpoints and output", "hardware": "hardware", "fine-tuning": "fine-tuning a trained checkpoint"}


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(
        description="Train the multimodal model: contrastive image and text encoders, the image decoder, the "
        "caption decoder and latent diffusion. All parts train at once, or (--diffusion-epochs, as the shapes "
        "preset does) every part but diffusion first, then the diffusion UNet alone. Writes <output-dir>/latest/ "
        "and best/ checkpoints, metrics.csv, curves.png and samples/epoch_NNN.png. Defaults depend on --preset:\n"
        + "\n".join(f"  {preset.name:<15} {preset.summary}" for preset in presets.PRESETS.values()),
        epilog="examples:\n"
        "  python train.py --preset shapes                # the built-in shapes set, generated on first use\n"
        "  python train.py --data-dir /data/coco2017 --batch-size 128 --epochs 30 --freeze-bert\n"
        "  python train.py --resume                       # continue checkpoints/latest where it stopped\n"
        "  python train.py --preset shapes --init-from checkpoints/demo --lora-rank 8 --data-dir data/shapes-orange",
    )
    run = parser.add_argument_group("run")
    run.add_argument("--resume", action="store_true",
                     help="continue from <output-dir>/latest exactly where it stopped, with the model it records "
                     "(model flags need not be repeated; one that disagrees with it is refused)")
    run.add_argument("--config", type=Path, metavar="FILE",
                     help="config fields from a JSON or YAML file (flags given beside it override it): one mapping "
                     "of model and training fields together, as a seed design's config dict (the design documents' "
                     "names too: vae_epochs, ldm_lr, ...), or a run's <output-dir>/latest/trainer_state.json: "
                     "--config RUN/latest/trainer_state.json --output-dir AGAIN replays that run")
    run.add_argument("--overwrite", action="store_true",
                     help="start afresh even if <output-dir> already holds a run (its checkpoints are replaced)")
    trains = {name: train_preset(name).to_dict() | {"preset": "coco"} for name in presets.names()}  # --preset's own default
    cli.add_config_arguments(parser, TrainConfig, defaults=trains, group_titles=TRAIN_GROUPS)
    models = {name: model_preset(name).to_dict() for name in presets.names()}
    cli.add_config_arguments(parser, ModelConfig, defaults=models, skip=("bert_config",), group_titles=MODEL_GROUPS)
    return parser


def configs_from_args(args: argparse.Namespace) -> tuple[ModelConfig | None, TrainConfig]:
    """The preset's configs with every flag the user gave applied on top; no model config when
    fine-tuning (--init-from), whose model is the checkpoint's."""
    from_file, model_from_file = read_run_config(args.config) if args.config else ({}, {})
    preset = args.preset or from_file.get("preset") or "coco"
    train_config = train_preset(preset, **from_file | cli.given(args, TrainConfig) | {"preset": preset})
    model_flags = cli.given(args, ModelConfig)
    if train_config.init_from is None:
        recorded = {k: v for k, v in model_from_file.items() if k != "bert_config"}  # BERT comes with its weights
        return model_preset(preset, **recorded | model_flags), train_config
    if train_config.autoencoder_frozen:  # a new diffusion UNet on its frozen autoencoder: diffusion flags set it up
        return new_diffusion_config(train_config.init_from, model_flags), train_config
    if model_flags:
        flags = ", ".join("--" + name.replace("_", "-") for name in model_flags)
        raise ValueError(f"--init-from fine-tunes the model of {train_config.init_from} as it is; {flags} cannot "
                         "change it (a new diffusion UNet on its frozen autoencoder can: --autoencoder-frozen)")
    return None, train_config


def resumed_model(parser: argparse.ArgumentParser, args: argparse.Namespace, train: TrainConfig) -> ModelConfig | None:
    """The model config of the run --resume continues, as its latest/ records it (None when the
    model is the --init-from checkpoint's); a flag that disagrees with the record is a usage error
    naming it. Read before any tensor is: a damaged trainer_state.json is named."""
    from multimodal.training.checkpoint import resumable_state, resumed_model_config

    state = resumable_state(Path(train.output_dir) / "latest")
    recorded = cli.build_config(
        parser, lambda: resumed_model_config(state, cli.given(args, ModelConfig), cli.given(args, TrainConfig)),
        ModelConfig, TrainConfig,
    )
    return recorded if train.init_from is None or train.autoencoder_frozen else None


def check_output_dir(output: Path, resume: bool, overwrite: bool) -> str | None:
    """What is wrong with writing a run into `output`, or None."""
    if output.exists() and not output.is_dir():
        return f"--output-dir {output} is a file, not a folder"
    ancestor = next(p for p in (output.absolute(), *output.absolute().parents) if p.exists())
    if not ancestor.is_dir():
        return f"--output-dir {output} cannot be made: {ancestor} is a file"
    if not os.access(ancestor, os.W_OK):
        return f"--output-dir {output} cannot be written: no permission in {ancestor}"
    if (output / "latest").exists() and not (resume or overwrite):
        return f"{output} already holds a run; continue it with --resume, or start over with --overwrite"
    return None


def data_folder(data_dir: Path) -> Path:
    """The folder a --data-dir names: itself, or where its shards lie ('shards/{000..009}.tar')."""
    return data_dir.parent if is_shard_spec(data_dir) and not data_dir.is_dir() else data_dir


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    model_config, train_config = cli.build_config(parser, lambda: configs_from_args(args), ModelConfig, TrainConfig)
    problem = check_output_dir(Path(train_config.output_dir), args.resume, args.overwrite)
    if problem:
        parser.error(problem)
    if train_config.init_from is not None:
        train_config = train_config.replace(init_from=str(cli.resolve_checkpoint_or_exit(parser, train_config.init_from)))
    problem = input_overwritten(train_config.output_dir, {
        "the --init-from checkpoint": train_config.init_from,
        "the data folder": data_folder(train_config.resolved_data_dir),
        "the --replay-data folder": train_config.replay_data and data_folder(Path(train_config.replay_data)),
    })
    if problem:
        parser.error(f"--output-dir {problem}")
    if args.log_every is not None and train_config.report_to == "none":
        parser.error("--log-every sets how often --report-to logs; without it, it would be ignored")
    for package in train_config.report_to.split(","):
        if package != "none" and importlib.util.find_spec(package) is None:
            parser.error(f"--report-to {package} needs the {package} package: pip install -e '.[{package}]'")

    from multimodal.device import precision_warning  # torch and the libraries load only now
    from multimodal.errors import InvalidInputError, TrainingError
    from multimodal.logs import quiet_libraries
    from multimodal.training import Trainer
    from multimodal.training.distributed import shutdown_distributed

    quiet_libraries()
    try:
        if args.resume:  # the model the run trained, and no flag that would change it
            model_config = resumed_model(parser, args, train_config)
        trainer = Trainer(model_config, train_config, resume=args.resume)
        slow = precision_warning(train_config.precision, trainer.device)
        if slow and trainer.dist.is_main:
            print(f"{parser.prog}: warning: {slow}", file=sys.stderr)
        if trainer.dist.is_main:
            parameters = sum(p.numel() for p in trainer.model.parameters()) / 1e6
            if train_config.lora_rank:
                adapters = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
                print(f"LoRA rank {train_config.lora_rank} on {train_config.init_from}: {adapters:,} trainable "
                      f"parameters ({100 * adapters / (parameters * 1e6 - adapters):.2f}% of the base model)")
            processes = f" × {trainer.dist.world_size} processes" if trainer.dist.enabled else ""
            stages = " → ".join(f"{s.name} ({s.steps} steps)" for s in trainer.stages)
            print(
                f"{train_config.preset}: {len(trainer.train_set)} train / {len(trainer.val_set)} val images, "
                f"{trainer.model_config.image_size}px, {parameters:.1f}M parameters on {trainer.device}{processes}; "
                f"steps {trainer.step} → {trainer.total_steps} ({trainer.steps_per_epoch} per epoch, "
                f"{trainer.images_per_step} images per step): {stages}"
            )
        final = trainer.run()
    except (InvalidInputError, TrainingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before training started (during it, the trainer stops cleanly)
        print("interrupted before training started; nothing was saved", file=sys.stderr)
        return 130
    finally:
        shutdown_distributed()
    output = Path(train_config.output_dir)
    if trainer.stop_signal:  # the trainer said where it saved; the run is not done
        return 0
    if final and trainer.dist.is_main:
        print(f"done: val loss {final['val_loss']:.4f}; checkpoints in {output / 'latest'} and {output / 'best'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
