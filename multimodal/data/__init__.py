"""Datasets and image conversions: COCO captions and the built-in shapes set, one loader for both."""

from multimodal.data.coco import CocoCaptionDataset, DatasetLayoutError, expected_layout
from multimodal.data.shapes import (
    COLORS,
    POSITION_PHRASES,
    POSITIONS,
    SHAPES,
    SIZES,
    ShapeSpec,
    all_combinations,
    canonical_caption,
    captions_for,
    generate_shapes_dataset,
    render_shape,
)
from multimodal.data.transforms import image_transform, load_rgb, to_pil

__all__ = [
    "COLORS",
    "POSITIONS",
    "POSITION_PHRASES",
    "SHAPES",
    "SIZES",
    "CocoCaptionDataset",
    "DatasetLayoutError",
    "ShapeSpec",
    "all_combinations",
    "canonical_caption",
    "captions_for",
    "expected_layout",
    "generate_shapes_dataset",
    "image_transform",
    "load_rgb",
    "render_shape",
    "to_pil",
]
