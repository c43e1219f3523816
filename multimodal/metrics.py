"""Metrics of generated output against the truth: retrieval R@K, BLEU and CIDEr, attribute
accuracy. Plain functions of tensors and strings; `multimodal/evaluation/` runs them over a data set."""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F


def words(text: str) -> list[str]:
    """Lower-case words without punctuation: the tokenisation caption parsing and BLEU/CIDEr share."""
    return re.findall(r"[a-z0-9]+", text.lower())


def attribute_accuracy(
    predicted: Sequence[Mapping[str, str | None] | None], truth: Sequence[Mapping[str, str]]
) -> dict[str, float]:
    """Per-attribute accuracy (the attributes are the keys of `truth`'s entries) and "all" (every
    attribute right at once). A None prediction (nothing found) is wrong on every attribute.
    """
    if len(predicted) != len(truth) or not truth:
        raise ValueError(f"{len(predicted)} predictions for {len(truth)} truths")
    attributes = list(truth[0])
    correct = np.array(
        [
            [pred is not None and pred.get(name) == true[name] for name in attributes]
            for pred, true in zip(predicted, truth)
        ]
    )
    scores = {attribute: float(correct[:, i].mean()) for i, attribute in enumerate(attributes)}
    scores["all"] = float(correct.all(axis=1).mean())
    return scores


def _hits(similarity: torch.Tensor, is_positive: torch.Tensor, ks: Sequence[int]) -> torch.Tensor:
    """How many queries (rows) rank a positive key in their top K, for each K.

    Ties count against the query (a negative scoring as high as the best positive ranks
    ahead of it), so collapsed embeddings score at chance, not 100%.
    """
    best = similarity.masked_fill(~is_positive, -math.inf).amax(dim=1, keepdim=True)
    ahead = ((similarity >= best) & ~is_positive).sum(dim=1)
    answerable = is_positive.any(dim=1)
    return torch.stack([((ahead < k) & answerable).sum() for k in ks])


def _recall_at_k(
    queries: torch.Tensor,
    keys: torch.Tensor,
    positive: torch.Tensor,
    ks: Sequence[int],
    chunk: int = 1024,
) -> dict[int, float]:
    """Fraction of queries (those with a positive) whose best positive key ranks in the top K.
    Queries go through in chunks so that COCO's 5k × 25k similarities never sit in memory."""
    hits = sum(
        _hits(queries[start : start + chunk] @ keys.T, positive[start : start + chunk], ks)
        for start in range(0, len(queries), chunk)
    )
    answerable_count = int(positive.any(dim=1).sum())
    return {k: hits[i].item() / answerable_count for i, k in enumerate(ks)}


def positive_matrix(positives: Sequence[int | Sequence[int]], num_texts: int) -> torch.Tensor:
    """(images, texts) booleans: True where text t is one of image i's correct texts."""
    positive = torch.zeros(len(positives), num_texts, dtype=torch.bool)
    for i, texts in enumerate(positives):
        positive[i, [texts] if isinstance(texts, int) else list(texts)] = True
    return positive


def recall_of_scores(scores: torch.Tensor, positive: torch.Tensor, ks: Sequence[int]) -> dict[str, float]:
    """R@K of queries (rows of `scores`, any score where higher is better) against keys (its
    columns), over the queries that have a positive key; 0 when none has. For rankings that
    are not one cosine (a reranked list), where `retrieval_recall` takes embeddings."""
    answerable_count = int(positive.any(dim=1).sum())
    hits = _hits(scores.float().cpu(), positive, ks)
    return {f"R@{k}": hits[i].item() / answerable_count if answerable_count else 0.0 for i, k in enumerate(ks)}


def retrieval_recall(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    positives: Sequence[int | Sequence[int]],
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Recall@K for image→text and text→image retrieval by cosine similarity.

    `positives[i]` is the index (or the list of indices) of image i's correct texts. That one
    form covers both sets: on COCO each image has ~5 captions of its own; on shapes every
    image points at one of the 180 canonical captions, and a caption's correct images are all
    images of its combination. Texts no image points at are left out of text→image.
    """
    if len(positives) != len(image_emb):
        raise ValueError(f"{len(image_emb)} images but {len(positives)} lists of positives")
    image_emb = F.normalize(image_emb.detach().float().cpu(), dim=-1)
    text_emb = F.normalize(text_emb.detach().float().cpu(), dim=-1)
    positive = positive_matrix(positives, len(text_emb))

    i2t = _recall_at_k(image_emb, text_emb, positive, ks)
    t2i = _recall_at_k(text_emb, image_emb, positive.T, ks)
    return {f"i2t_R@{k}": i2t[k] for k in ks} | {f"t2i_R@{k}": t2i[k] for k in ks}


def caption_scores(
    references: Mapping[Hashable, Sequence[str]], candidates: Mapping[Hashable, str]
) -> dict[str, float]:
    """BLEU-1…4 and CIDEr of one candidate caption per image against its reference captions.

    Scored with pycocoevalcap, but tokenised here (lower case, punctuation dropped) rather
    than with its PTBTokenizer, which needs Java. CIDEr weighs n-grams by how rare they are
    across images, so it needs several images to mean anything (with one image it is 0).
    """
    from pycocoevalcap.bleu.bleu import Bleu  # imported here: a large package only COCO scoring needs
    from pycocoevalcap.cider.cider import Cider

    refs = {key: [" ".join(words(r)) for r in references[key]] for key in candidates}
    cands = {key: [" ".join(words(candidates[key]))] for key in candidates}
    bleu, _ = Bleu(4).compute_score(refs, cands, verbose=0)
    cider, _ = Cider().compute_score(refs, cands)
    scores = {f"BLEU-{n}": float(score) for n, score in enumerate(bleu, start=1)}
    return scores | {"CIDEr": float(cider)}
