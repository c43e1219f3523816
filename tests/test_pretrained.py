"""The pretrained EfficientNet-Lite0: its weights load, classify real photographs sensibly, and a
file that does not fit is refused with its name."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from skimage import data as skimage_data

from multimodal.data.transforms import image_transform
from multimodal.errors import CheckpointError
from multimodal.models.pretrained import EfficientNetFeatures, efficientnet_lite0, weights_path

CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968, 504}  # espresso, cup, coffee mug


@pytest.fixture(scope="module")
def network() -> torch.nn.Module:
    return efficientnet_lite0().eval()


def test_weights_file_holds_296_tensors() -> None:
    assert len(torch.load(weights_path(), weights_only=True)) == 296


def test_imagenet_head_names_real_photographs(network) -> None:
    """Our [-1, 1] pixels are the TF-Lite normalisation (mean 0.5, std 0.5) the weights expect."""
    transform = image_transform(224)
    photos = [Image.fromarray(skimage_data.chelsea()), Image.fromarray(skimage_data.coffee())]
    with torch.no_grad():
        probabilities = network(torch.stack([transform(photo) for photo in photos])).softmax(-1)
    cat, coffee = probabilities.topk(3).indices.tolist()
    assert cat[0] in CATS and set(cat) <= CATS  # tiger cat, Egyptian cat, tabby
    assert coffee[0] == 967  # espresso
    assert probabilities[0, sorted(CATS)].sum() > 0.8
    assert probabilities[1, 967] > 0.8


def test_weights_that_do_not_fit_are_refused(tmp_path) -> None:
    weights = torch.load(weights_path(), weights_only=True)
    first = next(iter(weights))
    weights[first] = torch.zeros(8, 3, 3, 3)
    path = tmp_path / "wrong.pth"
    torch.save(weights, path)
    with pytest.raises(CheckpointError, match=f"{path}.*{first}.*shape"):
        efficientnet_lite0(weights=path)
    del weights[first]
    torch.save(weights, path)
    with pytest.raises(CheckpointError, match=f"{path}: expected 296 .*found 295"):
        efficientnet_lite0(weights=path)


def test_features_at_every_depth(network) -> None:
    features = EfficientNetFeatures().eval()
    images = torch.rand(2, 3, 224, 224) * 2 - 1
    with torch.no_grad():
        maps = features(images)
        expected = network.forward_features(images)
    assert [m.shape[1] for m in maps] == features.channels == [16, 24, 40, 112, 320, 1280]
    assert [m.shape[-1] for m in maps] == [112, 56, 28, 14, 7, 7]
    torch.testing.assert_close(maps[-1], expected)  # the classifier's own features, from the same weights
