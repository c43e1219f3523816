"""`python -m multimodal.adapters merge ADAPTER OUTPUT [--base DIR] [--overwrite]`: a LoRA
adapter merged into its base, written as a plain checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

from multimodal import cli


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(
        prog="python -m multimodal.adapters",
        description="Merge a LoRA adapter (what train.py --lora-rank writes) into its base checkpoint.",
        epilog="example:\n  python -m multimodal.adapters merge checkpoints/orange-lora/best checkpoints/orange-merged",
    )
    parser.add_argument("command", choices=("merge",), help="merge: write base + adapter as one plain checkpoint")
    parser.add_argument("adapter", type=Path, help="the adapter folder (adapter_config.json, adapter_model.safetensors)")
    parser.add_argument("output", type=Path, help="the checkpoint folder to write")
    parser.add_argument("--base", type=Path, help="the base checkpoint (default: the one the adapter points to)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    args = parser.parse_args(argv)
    with cli.friendly_errors(parser.prog):
        from multimodal.adapters.lora import merge  # torch and peft load only now

        print(merge(args.adapter, args.output, args.base, args.overwrite))
    return 0


if __name__ == "__main__":
    sys.exit(main())
