"""Evaluation: a trained model on a data set's validation split (what `python evaluate.py`
prints), with the metrics of `metrics.py`.

Text→image quality on the built-in sets is measured without a learned judge: the pixel readers
of `data/shapes_reader.py` and `data/scenes_reader.py` name what a generated picture shows,
their caption parsers what a generated caption says. Where a set held kinds out of training,
each metric is also given for the kinds training saw and those it never did. On photographs it
is measured as papers do: the distance between the features of pictures drawn for the split's
captions and of its images (FD/KID), R-precision and a CLIP-score with the model's own encoders.

    drivers.py   evaluate_builtin with a set's judge: evaluate_shapes, evaluate_scenes
                 (BUILTIN_DRIVERS by name); evaluate_captions for any captioned set (BLEU-4,
                 CIDEr-D, retrieval over its reference captions; text→image given a feature network)
    judges.py    the built-in sets' judges: which set a split is, the readers and parsers, scores
    features.py  the feature networks FD and KID compare pictures with: EfficientNet-Lite0
                 (FD_effnet, KID_effnet) or, given its weights file, the FID Inception (FID, KID)
    tables.py    the metrics, seen/unseen, targets and seconds per image as aligned text tables
"""

from __future__ import annotations

from multimodal.evaluation.drivers import BUILTIN_DRIVERS, evaluate_captions, evaluate_scenes, evaluate_shapes
from multimodal.evaluation.judges import builtin_dataset_kind, has_heldout, score_shape_images
from multimodal.evaluation.tables import (
    check_targets,
    format_seconds_per_image,
    format_seen_unseen,
    format_table,
    format_targets,
    seconds_per_image,
)

__all__ = [
    "BUILTIN_DRIVERS",
    "builtin_dataset_kind",
    "check_targets",
    "evaluate_captions",
    "evaluate_scenes",
    "evaluate_shapes",
    "format_seconds_per_image",
    "format_seen_unseen",
    "format_table",
    "format_targets",
    "has_heldout",
    "score_shape_images",
    "seconds_per_image",
]
