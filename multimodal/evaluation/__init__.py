"""Evaluation: a trained model on a data set's validation split (what `python evaluate.py`
prints), with the metrics of `metrics.py`.

Text→image quality on the built-in sets is measured without a learned judge: the pixel readers
of `data/shapes_reader.py` and `data/scenes_reader.py` name what a generated picture shows,
their caption parsers what a generated caption says. Where a set held kinds out of training,
each metric is also given for the kinds training saw and those it never did.

    drivers.py   evaluate_builtin with a set's judge: evaluate_shapes, evaluate_scenes
                 (BUILTIN_DRIVERS by name); evaluate_captions for any captioned set (BLEU-4,
                 CIDEr, retrieval over its reference captions)
    judges.py    the built-in sets' judges: which set a split is, the readers and parsers, scores
    tables.py    the metrics, seen/unseen and targets as aligned text tables
"""

from __future__ import annotations

from multimodal.evaluation.drivers import BUILTIN_DRIVERS, evaluate_captions, evaluate_scenes, evaluate_shapes
from multimodal.evaluation.judges import builtin_dataset_kind, has_heldout, score_shape_images
from multimodal.evaluation.tables import check_targets, format_seen_unseen, format_table, format_targets

__all__ = [
    "BUILTIN_DRIVERS",
    "builtin_dataset_kind",
    "check_targets",
    "evaluate_captions",
    "evaluate_scenes",
    "evaluate_shapes",
    "format_seen_unseen",
    "format_table",
    "format_targets",
    "has_heldout",
    "score_shape_images",
]
