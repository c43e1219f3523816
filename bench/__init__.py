"""Benchmarks of the model's hot paths: `python -m bench` writes docs/BENCHMARKS.md."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local; never wait on the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
