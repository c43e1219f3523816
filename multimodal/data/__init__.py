"""Datasets and image conversions: COCO captions and the built-in shapes set, one loader for both."""

from multimodal.data.coco import CocoCaptionDataset, expected_layout
from multimodal.data.collate import CaptionCollator
from multimodal.data.shapes import (
    COLORS,
    EXTRA_COLORS,
    PALETTE,
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
from multimodal.data.shapes_reader import parse_caption_attributes, read_shape_attributes
from multimodal.data.transforms import ImageInput, as_rgb, image_transform, load_rgb, to_pil
from multimodal.errors import DatasetLayoutError

__all__ = [
    "COLORS",
    "EXTRA_COLORS",
    "PALETTE",
    "POSITIONS",
    "POSITION_PHRASES",
    "SHAPES",
    "SIZES",
    "CaptionCollator",
    "CocoCaptionDataset",
    "DatasetLayoutError",
    "ImageInput",
    "ShapeSpec",
    "all_combinations",
    "as_rgb",
    "canonical_caption",
    "captions_for",
    "expected_layout",
    "generate_shapes_dataset",
    "image_transform",
    "load_rgb",
    "parse_caption_attributes",
    "read_shape_attributes",
    "render_shape",
    "to_pil",
]
