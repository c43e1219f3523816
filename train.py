"""Train the GenerativeMultimodalModel on COCO captions or the built-in shapes set.

    python train.py --preset shapes                 # built-in data, no download
    python train.py                                 # COCO 2017 in data/coco/coco2017
    python train.py --preset shapes --resume        # continue from checkpoints/latest
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights come from installed packages, never the hub


# Flags named in the README; every other config field gets an automatic --field-name flag.
NAMED = {
    "preset", "data_dir", "output_dir", "epochs", "max_steps", "batch_size", "learning_rate",
    "image_size", "seed", "device", "num_workers", "freeze_bert",
}
SKIPPED = {"bert_config"}  # set by checkpoints, not by hand


def _field_type(field: dataclasses.Field, hints: dict) -> type:
    hint = hints[field.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def build_parser() -> argparse.ArgumentParser:
    from multimodal.cli import ArgumentParser
    from multimodal.config import ModelConfig, TrainConfig

    parser = ArgumentParser(
        description="Train the multimodal model: contrastive encoders, image decoder, caption decoder "
        "and latent diffusion, jointly. Writes <output-dir>/latest, <output-dir>/best, metrics.csv, "
        "curves.png and samples/epoch_NNN.png.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--preset", choices=["coco", "shapes"], default="coco",
                        help="coco: COCO 2017 captions at 224 px; shapes: the built-in shapes set (generated, no download)")
    parser.add_argument("--data-dir", help="dataset root in COCO layout (default: data/coco/coco2017, or data/shapes)")
    parser.add_argument("--output-dir", help="where checkpoints, metrics and samples go (default: checkpoints)")
    parser.add_argument("--epochs", type=int, help="passes over the training images")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimiser steps")
    parser.add_argument("--batch-size", type=int, help="images per step")
    parser.add_argument("--lr", dest="learning_rate", type=float, help="peak learning rate (AdamW, warm-up then cosine)")
    parser.add_argument("--image-size", type=int, help="image side in pixels; must be 7·2^k (56, 112, 224, …)")
    parser.add_argument("--resume", action="store_true", help="continue from <output-dir>/latest")
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh even if <output-dir> already holds a run (its checkpoints are replaced)")
    parser.add_argument("--seed", type=int, help="seed for weights, data order and noise")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="auto picks CUDA when present")
    parser.add_argument("--num-workers", type=int, help="DataLoader worker processes (default: one per CPU core, at most 16)")
    parser.add_argument("--freeze-bert", action=argparse.BooleanOptionalAction,
                        help="keep BERT fixed and cache its features (default: on for shapes, off for coco)")

    for title, config_class in (("model options", ModelConfig), ("training options", TrainConfig)):
        group = parser.add_argument_group(title)
        hints = typing.get_type_hints(config_class)
        for field in dataclasses.fields(config_class):
            if field.name in NAMED or field.name in SKIPPED:
                continue
            flag = "--" + field.name.replace("_", "-")
            kind = _field_type(field, hints)
            if kind is bool:
                group.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction)
            else:
                group.add_argument(flag, dest=field.name, type=kind, metavar=kind.__name__.upper())
    return parser


def configs_from_args(args: argparse.Namespace):
    """The preset's configs with every flag the user gave applied on top."""
    from multimodal.config import ModelConfig, TrainConfig, model_preset, train_preset

    given = {k: v for k, v in vars(args).items() if v is not None and k not in ("resume", "overwrite")}
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    model_config = model_preset(args.preset, **{k: v for k, v in given.items() if k in model_fields})
    train_config = train_preset(args.preset, **{k: v for k, v in given.items() if k in train_fields})
    return model_config, train_config


def check_args(args: argparse.Namespace, train_config, parser: argparse.ArgumentParser) -> None:
    if train_config.batch_size <= 0:
        parser.error(f"--batch-size must be positive, got {train_config.batch_size}")
    if train_config.learning_rate <= 0:
        parser.error(f"--lr must be positive, got {train_config.learning_rate}")
    if train_config.epochs <= 0 or (train_config.max_steps is not None and train_config.max_steps <= 0):
        parser.error("--epochs and --max-steps must be positive")
    if train_config.precision not in ("auto", "fp32", "bf16"):
        parser.error(f"--precision must be auto, fp32 or bf16, got {train_config.precision!r}")
    if train_config.grad_accum < 1:
        parser.error(f"--grad-accum must be at least 1, got {train_config.grad_accum}")
    if train_config.num_workers is not None and train_config.num_workers < 0:
        parser.error("--num-workers cannot be negative")
    if train_config.save_every < 1:
        parser.error(f"--save-every must be at least 1, got {train_config.save_every}")
    if train_config.keep_last < 0:
        parser.error(f"--keep-last cannot be negative, got {train_config.keep_last}")
    if train_config.max_nonfinite_steps < 1:
        parser.error(f"--max-nonfinite-steps must be at least 1, got {train_config.max_nonfinite_steps}")
    if not 0 <= train_config.ema_decay < 1:
        parser.error(f"--ema-decay must be in [0, 1), got {train_config.ema_decay}")
    if train_config.diffusion_epochs < 0 or train_config.warmup_epochs < 0 or train_config.weight_decay < 0:
        parser.error("--diffusion-epochs, --warmup-epochs and --weight-decay cannot be negative")
    if not train_config.max_grad_norm > 0:
        parser.error(f"--max-grad-norm must be positive, got {train_config.max_grad_norm}")
    output = Path(train_config.output_dir)
    if output.exists() and not output.is_dir():
        parser.error(f"--output-dir {output} is a file, not a folder")
    ancestor = next(p for p in (output.absolute(), *output.absolute().parents) if p.exists())
    if not ancestor.is_dir():
        parser.error(f"--output-dir {output} cannot be made: {ancestor} is a file")
    if not os.access(ancestor, os.W_OK):
        parser.error(f"--output-dir {output} cannot be written: no permission in {ancestor}")
    if (output / "latest").exists() and not (args.resume or args.overwrite):
        parser.error(f"{output} already holds a run; continue it with --resume, or start over with --overwrite")


def quiet_libraries() -> None:
    """Harmless library chatter would bury the progress bar: keep errors only."""
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(torch|transformers|diffusers|torchvision)")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    diffusers_logging.set_verbosity_error()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        model_config, train_config = configs_from_args(args)
    except (ValueError, TypeError) as error:
        parser.error(str(error))
    check_args(args, train_config, parser)
    quiet_libraries()

    from multimodal.data import DatasetLayoutError
    from multimodal.device import DeviceUnavailableError
    from multimodal.training import Trainer, TrainingError
    from multimodal.training.distributed import shutdown_distributed

    try:
        trainer = Trainer(model_config, train_config, resume=args.resume)
        if trainer.dist.is_main:
            parameters = sum(p.numel() for p in trainer.model.parameters()) / 1e6
            processes = f" × {trainer.dist.world_size} processes" if trainer.dist.enabled else ""
            print(
                f"{train_config.preset}: {len(trainer.train_set)} train / {len(trainer.val_set)} val images, "
                f"{model_config.image_size}px, {parameters:.1f}M parameters on {trainer.device}{processes}; "
                f"steps {trainer.step} → {trainer.total_steps} ({trainer.steps_per_epoch} per epoch, "
                f"{trainer.images_per_step} images per step)"
            )
        final = trainer.run()
    except (DatasetLayoutError, DeviceUnavailableError, TrainingError) as error:
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
