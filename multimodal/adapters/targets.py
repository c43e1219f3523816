"""The modules that get LoRA adapters unless a run names others (`--lora-targets`). Plain
strings, no torch: the configuration reads them for its default and its --help."""

from __future__ import annotations

# The modules that get LoRA adapters by default (ends of their names, or whole parts). Measured
# on the shapes demo checkpoint with an orange-only set (docs/FINETUNING.md): adapters on the
# caption decoder's attention, the image encoder or the image decoder taught them to see or
# say orange everywhere; the caption decoder learns a new word through its word rows instead.
LORA_TARGETS = ",".join((
    "qkv", "self_out", "cross_q", "cross_kv", "cross_out", "text_embedding", "film",  # the diffusion UNet
    "projection.0", "projection.2", "project.1", "project.3",  # the text and image embedding heads
    "embedding_to_latent.0", "embedding_to_latent.2",  # the fast path
))
