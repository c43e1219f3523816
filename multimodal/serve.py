"""The web demo, in a browser: text → image, image → text and search on a trained checkpoint.

The `multimodal-serve` command of an installed package, also `python -m multimodal.serve`; the
repository's app.py calls the same `main`.

    python app.py                                   # checkpoints/, else checkpoints/demo/, on 127.0.0.1:7860
    python app.py --checkpoint ck --host 0.0.0.0 --port 8080
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights come from installed packages, never the hub

from multimodal import cli  # noqa: E402
from multimodal.config import ServeConfig  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(
        description="Serve a trained checkpoint as a web page (Gradio) with three tabs: text → image, image → "
        "text, and search over its data set's validation images. Listens on 127.0.0.1 unless --host says "
        "otherwise; needs no network.",
        epilog="examples:\n"
        "  python app.py                                  # then open http://127.0.0.1:7860\n"
        "  python app.py --checkpoint checkpoints/demo --port 8080\n"
        "  python app.py --host 0.0.0.0                   # reachable from other machines",
    )
    cli.add_config_arguments(parser, ServeConfig, group_titles={"": "serving"})
    cli.add_common_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    config = cli.config_from_flags(parser, args, ServeConfig)
    checkpoint = cli.resolve_checkpoint_or_exit(parser, args.checkpoint)
    cli.check_device(parser, args.device)
    if config.data_dir and not Path(config.data_dir).is_dir():
        parser.error(f"--data-dir {config.data_dir} is not a folder")
    cli.set_thread_policy(None)
    try:
        import gradio  # noqa: F401  (it and torch load only now, once the flags are good)
    except ImportError:
        parser.error("the web demo needs gradio: pip install -e '.[app]'")
    with cli.friendly_errors(parser.prog):
        from multimodal.app import Demo, build_page, launch

        demo = Demo.load(checkpoint, config, device=args.device, seed=args.seed)
        launch(build_page(demo), config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
