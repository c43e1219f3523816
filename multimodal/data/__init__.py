"""Datasets and image conversions: every dataset layout (COCO, image folder, paired files, captions.txt,
WebDataset shards) opened in one place, the built-in shapes set, and image conversions."""

from multimodal.data.caption_dataset import CaptionDataset, CaptionRecords
from multimodal.data.coco import CocoCaptionDataset, expected_layout
from multimodal.data.collate import CaptionCollator
from multimodal.data.layouts import Layout, Problem, detect_layout, read_layout
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
from multimodal.data.sources import open_split
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
    "CaptionDataset",
    "CaptionRecords",
    "CocoCaptionDataset",
    "DatasetLayoutError",
    "ImageInput",
    "Layout",
    "Problem",
    "ShapeSpec",
    "all_combinations",
    "as_rgb",
    "canonical_caption",
    "detect_layout",
    "captions_for",
    "expected_layout",
    "generate_shapes_dataset",
    "image_transform",
    "load_rgb",
    "open_split",
    "parse_caption_attributes",
    "read_layout",
    "read_shape_attributes",
    "render_shape",
    "to_pil",
]
