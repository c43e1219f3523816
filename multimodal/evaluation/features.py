"""The feature networks that judge generated pictures against real ones (Fréchet distance, KID),
pluggable: ImageNet EfficientNet-Lite0, which the package already ships, by default; the FID
Inception-v3 when the user gives its weights file. Nothing is downloaded.

EfficientNet-Lite0's numbers are its own (`FD_effnet`, `KID_effnet`): they rank checkpoints
but are never FID. Papers' FID is the Inception network of pytorch-fid and torchmetrics
(`pt_inception-2015-12-05-6726825d.pth`, TensorFlow's 2015 graph ported): torchvision's
Inception-v3 with 1008 classes and, in its mixed blocks, TensorFlow's pooling (padding left out
of the averages, max pooling in the last block), as pytorch-fid builds it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from multimodal.errors import CheckpointError

FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
FID_SIZE = 299  # the Inception network's input: pictures are resized to it, bilinearly, as pytorch-fid does
EFFNET_SIZE = 224


@dataclass
class FeatureNetwork:
    """A network that turns pictures into one feature vector each, and the names its distances
    are reported under."""

    name: str  # what the features are, in words
    fd_name: str  # "FID" only for the FID Inception network
    kid_name: str
    input_size: int  # pictures are resized to it (bilinear) before the network sees them
    network: nn.Module  # (B, 3, S, S) in [-1, 1] → (B, d)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Float64 features (B, d) on the CPU of pictures (B, 3, H, W) in [-1, 1]."""
        device = next(self.network.parameters()).device
        images = images.to(device=device, dtype=torch.float32)
        if images.shape[-2:] != (self.input_size, self.input_size):
            images = F.interpolate(images, size=(self.input_size, self.input_size), mode="bilinear",
                                   align_corners=False)
        return self.network(images).double().cpu()


class _PooledEfficientNet(nn.Module):
    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network.forward_head(self.network.forward_features(images), pre_logits=True)


def efficientnet_features(device: str | torch.device = "cpu") -> FeatureNetwork:
    """ImageNet EfficientNet-Lite0 (the package's weights, multimodal/models/pretrained.py): its
    1280 globally pooled features, at 224 px; our [-1, 1] pixels are its TF-Lite normalisation."""
    from multimodal.models.pretrained import efficientnet_lite0

    network = _PooledEfficientNet(efficientnet_lite0(pretrained=True)).eval().to(device)
    return FeatureNetwork("ImageNet EfficientNet-Lite0, 1280 pooled features", "FD_effnet", "KID_effnet",
                          EFFNET_SIZE, network)


def _tensorflow_pooling(block: type[nn.Module], pool) -> type[nn.Module]:
    """`block` (a torchvision Inception block) whose pool branch pools as the TensorFlow graph the
    FID weights come from (pytorch-fid's FIDInceptionA/C/E_1/E_2). torchvision's forward gives the
    branches, the pool branch last; it is computed again from `pool(x)`."""

    class TensorFlowPooling(block):
        def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            branches = super()._forward(x)
            branches[-1] = self.branch_pool(pool(x))
            return branches

    TensorFlowPooling.__name__ = f"FID{block.__name__}"
    return TensorFlowPooling


def _average_without_padding(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _max(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class FIDInception(nn.Module):
    """The FID Inception-v3 (pytorch-fid's layout, so its weights file loads as it is): pictures in
    [-1, 1] at 299 px → the 2048 features of its last average pool."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import inception

        net = inception.inception_v3(weights=None, num_classes=1008, aux_logits=False, init_weights=False)
        block_a = _tensorflow_pooling(inception.InceptionA, _average_without_padding)
        block_c = _tensorflow_pooling(inception.InceptionC, _average_without_padding)
        net.Mixed_5b, net.Mixed_5c, net.Mixed_5d = block_a(192, 32), block_a(256, 64), block_a(288, 64)
        net.Mixed_6b, net.Mixed_6c = block_c(768, channels_7x7=128), block_c(768, channels_7x7=160)
        net.Mixed_6d, net.Mixed_6e = block_c(768, channels_7x7=160), block_c(768, channels_7x7=192)
        net.Mixed_7b = _tensorflow_pooling(inception.InceptionE, _average_without_padding)(1280)
        net.Mixed_7c = _tensorflow_pooling(inception.InceptionE, _max)(2048)
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        net = self.net
        x = net.maxpool1(net.Conv2d_2b_3x3(net.Conv2d_2a_3x3(net.Conv2d_1a_3x3(images))))
        x = net.maxpool2(net.Conv2d_4a_3x3(net.Conv2d_3b_1x1(x)))
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(net, f"Mixed_{name}")(x)
        return torch.flatten(net.avgpool(x), 1)


def _not_fid(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"--fid-weights {path} is not the FID Inception-v3 ({FID_WEIGHTS_NAME}, the file "
                           f"pytorch-fid and torchmetrics use): {why}")


def read_fid_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The FID Inception's weights at `path`, read with weights_only=True (no code runs) and
    checked name by name and shape by shape against the network (built on the meta device, so a
    wrong file is refused at once); a file that is not that network's is a CheckpointError in
    one line naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"--fid-weights {path} not found: it is the FID Inception-v3's weights, "
                              f"{FID_WEIGHTS_NAME}, the file pytorch-fid and torchmetrics use")
    try:
        weights = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # not a torch file, cut short, or holding code that weights_only refuses to run
        raise _not_fid(path, f"it cannot be read as a torch state dict ({type(error).__name__})") from None
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise _not_fid(path, f"it holds a {type(weights).__name__}, not a dict of tensors")
    with torch.device("meta"):
        expected = FIDInception().net.state_dict()
    # Files saved before BatchNorm counted its batches lack those counters; they are not weights.
    needed = {name for name in expected if not name.endswith("num_batches_tracked")}
    missing, unexpected = sorted(needed - set(weights)), sorted(set(weights) - set(expected))
    if missing or unexpected:
        what = [f"it lacks {len(missing)} of the network's {len(needed)} tensors (e.g. {missing[0]})"] * bool(missing)
        what += [f"holds {len(unexpected)} the network has not (e.g. {unexpected[0]})"] * bool(unexpected)
        raise _not_fid(path, " and ".join(what))
    for name, value in weights.items():
        if value.shape != expected[name].shape:
            raise _not_fid(path, f"{name} has shape {tuple(value.shape)}, the FID network's "
                           f"{tuple(expected[name].shape)}")
    return weights


def inception_features(path: str | os.PathLike, device: str | torch.device = "cpu") -> FeatureNetwork:
    """The FID Inception-v3 with the weights at `path` (`read_fid_weights`): its 2048 pool
    features at 299 px, whose distances are FID and KID as papers report them."""
    weights = read_fid_weights(path)
    network = FIDInception()
    network.net.load_state_dict(weights, strict=False)  # strict but for the batch counters, checked above
    return FeatureNetwork("FID Inception-v3 (pytorch-fid's), 2048 pool features", "FID", "KID", FID_SIZE,
                          network.eval().to(device))
