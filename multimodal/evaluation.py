"""Evaluation drivers: a trained model on a data set's validation split.

`evaluate_shapes`, `evaluate_scenes` and `evaluate_coco` run the metrics of `metrics.py` over
the validation images (what `python evaluate.py` prints). Text→image quality on the built-in
sets is measured without a learned judge: the pixel readers of `data/shapes_reader.py` and
`data/scenes_reader.py` name what a generated picture shows, their caption parsers what a
generated caption says. Where a set held kinds out of training, each metric is also given for
the kinds training saw and those it never did.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from multimodal.config import SamplingConfig
from multimodal.data import scenes
from multimodal.data.coco import CocoCaptionDataset
from multimodal.data.scenes_reader import parse_scene_caption, read_scene
from multimodal.data.shapes import ShapeSpec, all_combinations, canonical_caption, dataset_colors, is_heldout
from multimodal.data.shapes_reader import parse_caption_attributes, read_shape_attributes
from multimodal.data.transforms import to_pil
from multimodal.metrics import attribute_accuracy, caption_scores, positive_matrix, recall_of_scores, retrieval_recall

if TYPE_CHECKING:
    from multimodal.models import GenerativeMultimodalModel


def format_table(metrics: Mapping[str, float | int | str]) -> str:
    """The metrics as an aligned two-column table, for logs and the command line."""
    rows = [("metric", "value")]
    rows += [
        (str(name), f"{value:.4f}" if isinstance(value, float) else str(value))
        for name, value in metrics.items()
    ]
    name_width = max(len(name) for name, _ in rows)
    value_width = max(len(value) for _, value in rows)
    rows.insert(1, ("-" * name_width, "-" * value_width))
    return "\n".join(f"{name:<{name_width}}  {value:>{value_width}}" for name, value in rows)


def format_seen_unseen(metrics: Mapping[str, float | int | str]) -> str:
    """The metrics measured for kinds training saw and never saw, side by side with the whole
    split's: one row per metric, columns all / seen / unseen. Empty when there are none."""
    names = [name.removeprefix("unseen/") for name in metrics if name.startswith("unseen/")]
    if not names:
        return ""
    rows = [("metric", "all", "seen", "unseen"), ("------", "---", "----", "------")]
    for name in names:
        cells = [metrics.get(key) for key in (name, f"seen/{name}", f"unseen/{name}")]
        rows.append((name, *("—" if value is None else f"{value:.4f}" for value in cells)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join([row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])])
        for row in rows
    )


# -- a trained model on a data set's validation split ---------------------------------------

# What a working model must reach on the shapes set: metric → lowest acceptable value.
SHAPES_TARGETS: dict[str, float] = {
    "retrieval/i2t_R@1": 0.95,
    "retrieval/t2i_R@1": 0.95,
    "caption/all": 0.95,
    "t2i/color": 0.95,
    "t2i/shape": 0.90,
    "t2i/position": 0.90,
    "t2i/size": 0.90,
    "t2i/all": 0.80,
}


# With held-out combinations (the shapes-holdout preset): what training saw, and what it never did.
SHAPES_HOLDOUT_TARGETS: dict[str, float] = {
    "seen/t2i/all": 0.95,
    "unseen/t2i/all": 0.80,
    "seen/caption/all": 0.95,
    "unseen/caption/all": 0.90,
}

# The scenes set: both objects right (colour, shape and place), for pairs seen and never seen together.
SCENES_TARGETS: dict[str, float] = {
    "seen/t2i/both": 0.85,
    "unseen/t2i/both": 0.70,
    "seen/caption/both": 0.95,
    "unseen/caption/both": 0.80,
    "seen/retrieval_reranked/i2t_R@1": 0.90,
    "unseen/retrieval_reranked/i2t_R@1": 0.80,
    "seen/retrieval_reranked/t2i_R@1": 0.90,
    "unseen/retrieval_reranked/t2i_R@1": 0.80,
}
# Retrieval on the built-in sets is also measured reranked: each query's nearest few by cosine
# reordered by the caption decoder's likelihood (`_reranked_scores`). The scenes set's mirror
# captions ("a red circle on the left and a blue square on the right" and its swap) sit at
# cosine ~0.98, where the embeddings cannot tell them apart and the caption decoder can; the
# table shows both (README: Generalisation).
RERANK_TOP_K = 5


def builtin_dataset_kind(dataset: CocoCaptionDataset) -> str | None:
    """"shapes" or "scenes" for a built-in set (every image records what it shows under that
    name), None for anything else."""
    infos = list(dataset.image_info.values())
    for kind, key in (("shapes", "shape"), ("scenes", "scene")):
        if infos and all(key in info for info in infos):
            return kind
    return None


def has_heldout(dataset: CocoCaptionDataset) -> bool:
    """Whether the set holds validation images of kinds training never saw (each image says)."""
    infos = list(dataset.image_info.values())
    return bool(infos) and all("seen" in info for info in infos)


def score_shape_images(
    images: Sequence[Image.Image | np.ndarray], specs: Sequence[ShapeSpec]
) -> dict[str, float]:
    """Attribute accuracy of pictures drawn for `specs`, as the pixel reader sees them."""
    predicted = [read_shape_attributes(image) for image in images]
    return attribute_accuracy(predicted, [asdict(spec) for spec in specs])


def _loader(dataset: torch.utils.data.Dataset, batch_size: int, limit: int | None) -> torch.utils.data.DataLoader:
    """The first `limit` (default: all) images of `dataset` in file (or stream) order."""
    if limit is not None and isinstance(dataset, torch.utils.data.IterableDataset):
        dataset = list(itertools.islice(dataset, limit))  # a quick look: a few samples in memory
    elif limit is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(limit, len(dataset))))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)


@dataclass
class _EncodedImages:
    """What one pass over the validation images gives: their latents and embeddings, greedy
    captions and ids, and the seconds spent encoding and captioning."""

    latents: torch.Tensor
    embeddings: torch.Tensor
    captions: list[str]
    image_ids: list[int]
    seconds: dict[str, float]


def _embed_and_caption(
    model: GenerativeMultimodalModel, loader: torch.utils.data.DataLoader, progress: bool
) -> _EncodedImages:
    """Every image encoded once, and captioned from that latent, in one pass."""
    latents, embeddings, captions, image_ids = [], [], [], []
    seconds = {"retrieval": 0.0, "caption": 0.0}
    for batch in tqdm(loader, desc="embed + caption images", unit="batch", disable=not progress):
        start = time.perf_counter()
        with torch.no_grad():
            z, embedding = model.image_encoder(batch["image"].to(model.device))
        latents.append(z.cpu())
        embeddings.append(embedding.cpu())
        embedded = time.perf_counter()
        captions += model.generate_text_from_latent(z)
        seconds["retrieval"] += embedded - start
        seconds["caption"] += time.perf_counter() - embedded
        image_ids += batch["image_id"].tolist()
    return _EncodedImages(torch.cat(latents), torch.cat(embeddings), captions, image_ids, seconds)


def _embed_texts(model: GenerativeMultimodalModel, texts: Sequence[str], batch_size: int) -> torch.Tensor:
    batches = [list(texts[start : start + batch_size]) for start in range(0, len(texts), batch_size)]
    return torch.cat([model.encode_text(batch).cpu() for batch in batches])


def _draw(
    model: GenerativeMultimodalModel,
    prompts: Sequence[str],
    batch_size: int,
    progress: str | None,
    sampling: SamplingConfig,
    seed: int,
) -> list[Image.Image]:
    """One picture per prompt, in batches; the noise of every batch comes from one generator
    seeded with `seed`. `progress` names the progress bar (None: no bar)."""
    images: list[Image.Image] = []
    generator = torch.Generator().manual_seed(seed)
    batches = range(0, len(prompts), batch_size)
    for start in tqdm(batches, desc=progress, unit="batch", disable=progress is None):
        batch = list(prompts[start : start + batch_size])
        images += [to_pil(image) for image in model.generate_image_from_text(batch, sampling, generator)]
    return images


def _draw_both_ways(
    model: GenerativeMultimodalModel,
    prompts: Sequence[str],
    batch_size: int,
    sampling: SamplingConfig,
    seed: int,
    progress: bool,
) -> tuple[list[Image.Image], list[Image.Image], dict[str, float]]:
    """Pictures for `prompts` by diffusion (as `sampling` says) and by the fast path, with the
    seconds each took."""
    seconds = {}
    start = time.perf_counter()
    label = f"text → image ({sampling.describe()})"
    diffusion = _draw(model, prompts, batch_size, label if progress else None, sampling.replace(use_diffusion=True),
                      seed)
    seconds["t2i"] = time.perf_counter() - start
    start = time.perf_counter()
    fast = _draw(model, prompts, batch_size, "text → image (fast path)" if progress else None,
                 sampling.replace(use_diffusion=False), seed)
    seconds["t2i_fast"] = time.perf_counter() - start
    return diffusion, fast, seconds


def _reranked_scores(
    model: GenerativeMultimodalModel,
    latents: torch.Tensor,
    texts: Sequence[str],
    similarity: torch.Tensor,
    top_k: int,
    batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image→text (images, texts) and text→image (texts, images) scores where each query's
    `top_k` nearest by cosine are put first, in the order of the caption decoder's
    log p(text | image), and the rest keep their cosine order: BLIP's retrieve-then-rerank,
    with our caption decoder as the judge."""
    scores = []
    for queries, as_pair in ((similarity, lambda q, k: (q, k)), (similarity.T, lambda q, k: (k, q))):
        top = queries.topk(min(top_k, queries.shape[1]), dim=1).indices
        pairs = [as_pair(q, k) for q in range(len(queries)) for k in top[q].tolist()]
        likelihood = torch.cat([
            model.caption_log_likelihood(latents[[i for i, _ in chunk]], [texts[t] for _, t in chunk]).float().cpu()
            for chunk in (pairs[start : start + batch_size] for start in range(0, len(pairs), batch_size))
        ])
        # The top_k get the scores k + 1 … 2 (above every cosine, which is at most 1) in the
        # likelihood's order.
        order = likelihood.view(top.shape).argsort(dim=1, descending=True)
        ranked = torch.arange(top.shape[1] + 1, 1, -1, dtype=queries.dtype).expand_as(top)
        scores.append(queries.clone().scatter_(1, top.gather(1, order), ranked))
    return scores[0], scores[1]


def _retrieval(
    name: str,
    i2t_scores: torch.Tensor,
    t2i_scores: torch.Tensor,
    positive: torch.Tensor,
    image_seen: Sequence[bool],
    text_seen: Sequence[bool],
    ks: Sequence[int],
) -> dict[str, float]:
    """R@K both ways over every image and text (`name/…`) and, where `image_seen` / `text_seen`
    are given, for seen and unseen kinds apart ("seen/name/…", "unseen/name/…"): images of each
    kind ranking all texts, and texts of each kind ranking all images."""
    groups = {"": (list(range(len(i2t_scores))), list(range(len(t2i_scores))))}
    if image_seen:
        for group, wanted in (("seen/", True), ("unseen/", False)):
            groups[group] = ([i for i, seen in enumerate(image_seen) if seen == wanted],
                             [t for t, seen in enumerate(text_seen) if seen == wanted])
    scores = {}
    for group, (images, texts) in groups.items():
        for direction, queries, rows, is_positive in (
            ("i2t", i2t_scores, images, positive), ("t2i", t2i_scores, texts, positive.T)
        ):
            if rows:
                recall = recall_of_scores(queries[rows], is_positive[rows], ks)
                scores |= {f"{group}{name}/{direction}_{at_k}": value for at_k, value in recall.items()}
    return scores


def _by_group(
    name: str, score: Callable[[list, list], dict[str, float]], predicted: list, truth: list, seen: Sequence[bool]
) -> dict[str, float]:
    """`score(predicted, truth)` over all items as `name/…`, and, where `seen` is given, over the
    items of kinds training saw ("seen/name/…") and never saw ("unseen/name/…") apart."""
    groups = {"": list(range(len(truth)))}
    if seen:
        groups |= {"seen/": [i for i, s in enumerate(seen) if s], "unseen/": [i for i, s in enumerate(seen) if not s]}
    return {
        f"{group}{name}/{key}": value
        for group, items in groups.items() if items
        for key, value in score([predicted[i] for i in items], [truth[i] for i in items]).items()
    }


def scene_accuracy(predicted: list[scenes.SceneSpec | None], truth: list[scenes.SceneSpec]) -> dict[str, float]:
    """How often both objects are right (colour, shape and place: "both"), the first and the
    second object alone, and the arrangement. None (nothing read) is wrong on each."""
    right = np.array([
        [p is not None and getattr(p, part) == getattr(t, part) for part in ("first", "second", "arrangement")]
        for p, t in zip(predicted, truth)
    ])
    return {"both": float(right.all(axis=1).mean()), "first": float(right[:, 0].mean()),
            "second": float(right[:, 1].mean()), "arrangement": float(right[:, 2].mean())}


def _prefixed(prefix: str, scores: Mapping[str, float]) -> dict[str, float]:
    return {f"{prefix}/{name}": value for name, value in scores.items()}


@dataclass(frozen=True)
class _BuiltinJudge:
    """What measuring a model on a built-in set needs, without a learned judge."""

    kinds: list  # every kind of picture (combination, layout), in the order of the canonical captions
    caption: Callable[[Any], str]  # a kind's canonical caption
    truth: Callable[[dict], Any]  # a validation image's entry → its kind
    read: Callable[[Image.Image], Any]  # a picture → what it shows (None: nothing)
    parse: Callable[[str], Any]  # a caption → what it says (None: nothing definite)
    score: Callable[[list, list], dict[str, float]]  # (read or parsed, kinds) → accuracies
    heldout: Callable[[Any], bool]  # whether training never saw a kind


def _shapes_judge(colors: Sequence[str]) -> _BuiltinJudge:
    return _BuiltinJudge(
        kinds=all_combinations(colors), caption=canonical_caption, truth=lambda info: ShapeSpec(**info["shape"]),
        read=read_shape_attributes, parse=parse_caption_attributes,
        score=lambda found, kinds: attribute_accuracy(found, [asdict(kind) for kind in kinds]), heldout=is_heldout,
    )


def _scenes_judge() -> _BuiltinJudge:
    heldout = scenes.heldout_pairs()
    return _BuiltinJudge(
        kinds=scenes.all_layouts(), caption=scenes.canonical_caption,
        truth=lambda info: scenes.SceneSpec.from_dict(info["scene"]), read=read_scene, parse=parse_scene_caption,
        score=scene_accuracy, heldout=lambda spec: scenes.is_heldout(spec, heldout),
    )


def _evaluate_builtin(
    model: GenerativeMultimodalModel,
    dataset: CocoCaptionDataset,
    judge: _BuiltinJudge,
    batch_size: int,
    sampling: SamplingConfig | None,
    seed: int,
    limit: int | None,
    progress: bool,
) -> dict[str, float | int]:
    """Retrieval over the canonical captions of every kind (an image's positive is its kind's),
    by cosine and reranked by the caption decoder; greedy captions parsed back; one picture per
    kind drawn from its canonical caption, by diffusion as `sampling` says (noise from `seed`)
    and by the fast path, and read back. Where the set held kinds out of training, every metric
    also for seen and unseen kinds apart. `limit` keeps the first N validation images and the
    first N kinds."""
    sampling = sampling or SamplingConfig()
    started = time.perf_counter()
    split = has_heldout(dataset)
    loader = _loader(dataset, batch_size, limit)
    images = _embed_and_caption(model, loader, progress)
    seconds = images.seconds
    truth = [judge.truth(dataset.image_info[image_id]) for image_id in images.image_ids]
    image_seen = [dataset.image_info[image_id]["seen"] for image_id in images.image_ids] if split else []

    start = time.perf_counter()
    texts = [judge.caption(kind) for kind in judge.kinds]
    text_emb = F.normalize(_embed_texts(model, texts, batch_size).float(), dim=-1)
    similarity = F.normalize(images.embeddings.float(), dim=-1) @ text_emb.T
    kind_index = {kind: i for i, kind in enumerate(judge.kinds)}
    positive = positive_matrix([kind_index[kind] for kind in truth], len(texts))
    kind_seen = [not judge.heldout(kind) for kind in judge.kinds] if split else []
    retrieval = _retrieval("retrieval", similarity, similarity.T, positive, image_seen, kind_seen, (1, 5))
    seconds["retrieval"] += time.perf_counter() - start
    start = time.perf_counter()
    reranked = _reranked_scores(model, images.latents, texts, similarity, RERANK_TOP_K, batch_size)
    retrieval |= _retrieval("retrieval_reranked", *reranked, positive, image_seen, kind_seen, (1,))
    seconds["retrieval_reranked"] = time.perf_counter() - start

    specs = judge.kinds[:limit]
    diffusion, fast, drawing_seconds = _draw_both_ways(
        model, [judge.caption(kind) for kind in specs], batch_size, sampling, seed, progress
    )
    seconds |= drawing_seconds
    read = [[judge.read(picture) for picture in pictures] for pictures in (diffusion, fast)]
    seconds["total"] = time.perf_counter() - started

    return (
        {"images": len(images.image_ids), "prompts": len(specs)}
        | retrieval
        | _by_group("caption", judge.score, [judge.parse(text) for text in images.captions], truth, image_seen)
        | _by_group("t2i", judge.score, read[0], specs, kind_seen[: len(specs)])
        | _by_group("t2i_fast", judge.score, read[1], specs, kind_seen[: len(specs)])
        | _prefixed("seconds", seconds)
    )


def evaluate_shapes(
    model: GenerativeMultimodalModel,
    dataset: CocoCaptionDataset,
    batch_size: int = 64,
    sampling: SamplingConfig | None = None,
    seed: int = 0,
    limit: int | None = None,
    progress: bool = False,
) -> dict[str, float | int]:
    """Every shapes-set metric of `model` on `dataset` (a validation split of the shapes set, at
    the model's image size), and the seconds each took: retrieval over the canonical captions of
    every combination of the colours the set was drawn in (180 for the standard six), captions
    parsed into the four attributes, text→image read back by the pixel reader (with diffusion
    and with the fast path); on a set with held-out combinations (shapes-holdout) each also for
    seen ("seen/…") and unseen ("unseen/…") combinations. `limit` keeps the first N validation
    images and the first N combinations, for quick checks.
    """
    judge = _shapes_judge(dataset_colors(dataset.root))
    return _evaluate_builtin(model, dataset, judge, batch_size, sampling, seed, limit, progress)


def evaluate_scenes(
    model: GenerativeMultimodalModel,
    dataset: CocoCaptionDataset,
    batch_size: int = 64,
    sampling: SamplingConfig | None = None,
    seed: int = 0,
    limit: int | None = None,
    progress: bool = False,
) -> dict[str, float | int]:
    """Every scenes-set metric of `model` on `dataset` (a validation split of the scenes set), for
    all layouts and for pairs seen ("seen/…") and never seen together in training ("unseen/…"):
    retrieval over the 540 canonical captions, captions parsed into both objects and their
    arrangement, and one picture per layout read back ("both": colour, shape and place of each
    object right). `limit` keeps the first N validation images and the first N layouts.
    """
    return _evaluate_builtin(model, dataset, _scenes_judge(), batch_size, sampling, seed, limit, progress)


def evaluate_coco(
    model: GenerativeMultimodalModel,
    dataset: torch.utils.data.Dataset,
    batch_size: int = 64,
    limit: int | None = None,
    progress: bool = False,
) -> dict[str, float | int]:
    """BLEU-4 and CIDEr of greedy captions against each image's references, and retrieval
    R@1/5/10 both ways over every caption of the images evaluated (an image's positives are
    its own captions), on `dataset` (a validation split at the model's image size); `limit`
    keeps the first N images."""
    started = time.perf_counter()
    loader = _loader(dataset, batch_size, limit)
    references = dataset.references
    images = _embed_and_caption(model, loader, progress)
    image_ids, captions, seconds = images.image_ids, images.captions, images.seconds

    start = time.perf_counter()
    texts: list[str] = []
    positives: list[list[int]] = []
    for image_id in image_ids:
        positives.append(list(range(len(texts), len(texts) + len(references[image_id]))))
        texts += references[image_id]
    retrieval = retrieval_recall(images.embeddings, _embed_texts(model, texts, batch_size), positives, ks=(1, 5, 10))
    seconds["retrieval"] += time.perf_counter() - start

    start = time.perf_counter()
    scores = caption_scores(
        {image_id: references[image_id] for image_id in image_ids}, dict(zip(image_ids, captions))
    )
    seconds["caption"] += time.perf_counter() - start
    seconds["total"] = time.perf_counter() - started

    return (
        {"images": len(image_ids), "captions": len(texts)}
        | _prefixed("retrieval", retrieval)
        | {"caption/BLEU-4": scores["BLEU-4"], "caption/CIDEr": scores["CIDEr"]}
        | _prefixed("seconds", seconds)
    )


def check_targets(metrics: Mapping[str, float], targets: Mapping[str, float]) -> dict[str, bool]:
    """Whether each targeted metric reaches its lowest acceptable value."""
    return {name: metrics[name] >= goal for name, goal in targets.items()}


def format_targets(metrics: Mapping[str, float], targets: Mapping[str, float]) -> str:
    """The targets as an aligned table (goal, value reached, met or not), below `format_table`'s."""
    met = check_targets(metrics, targets)
    rows = [("target", "goal", "value", "met")]
    rows += [
        (name, f">= {goal:.2f}", f"{metrics[name]:.4f}", "yes" if met[name] else "NO")
        for name, goal in targets.items()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    rows.insert(1, tuple("-" * width for width in widths))
    lines = [
        "  ".join([row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])])
        for row in rows
    ]
    return "\n".join(lines + [f"{sum(met.values())} of {len(met)} targets met"])
