"""The evaluation drivers: a trained model on a data set's validation split.

`evaluate_builtin` measures a built-in set with its judge (`judges.py`), which
`evaluate_shapes` and `evaluate_scenes` choose; `evaluate_captions` measures any captioned set
(COCO, a folder of captioned images, WebDataset shards) against its reference captions and,
given a feature network (`features.py`), the pictures it draws for them against its images.
"""

from __future__ import annotations

import itertools
import time
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from multimodal.config import SamplingConfig
from multimodal.data.shapes import dataset_colors
from multimodal.data.transforms import to_pil
from multimodal.errors import InvalidInputError
from multimodal.evaluation.features import FeatureNetwork
from multimodal.evaluation.judges import BuiltinJudge, has_heldout, scenes_judge, shapes_judge
from multimodal.metrics import (
    PTBTokenizerError,
    TooFewSamplesError,
    caption_scores,
    frechet_distance,
    kernel_inception_distance,
    mean_cosine,
    positive_matrix,
    ptb_available,
    r_precision,
    recall_of_scores,
    retrieval_recall,
    retrieval_recall_folds,
)

if TYPE_CHECKING:
    from multimodal.data.coco import CocoCaptionDataset
    from multimodal.models import GenerativeMultimodalModel


# Retrieval on the built-in sets is also measured reranked: each query's nearest few by cosine
# reordered by the caption decoder's likelihood (`_reranked_scores`). The scenes set's mirror
# captions ("a red circle on the left and a blue square on the right" and its swap) sit at
# cosine ~0.98, where the embeddings cannot tell them apart and the caption decoder can; the
# table shows both (docs/GENERALISATION.md).
RERANK_TOP_K = 5
# Papers' protocols: R-precision ranks a prompt among 99 other captions (AttnGAN); KID averages
# 100 subsets of 1,000 (torchmetrics' defaults); COCO retrieval is also given on 1k-image folds.
R_PRECISION_NEGATIVES = 99
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000
RETRIEVAL_FOLD = 1000


def _loader(dataset: torch.utils.data.Dataset, batch_size: int, limit: int | None) -> torch.utils.data.DataLoader:
    """The first `limit` (default: all) images of `dataset` in file (or stream) order."""
    if limit is not None and isinstance(dataset, torch.utils.data.IterableDataset):
        dataset = list(itertools.islice(dataset, limit))  # a quick look: a few samples in memory
    elif limit is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(limit, len(dataset))))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)


@dataclass
class _EncodedImages:
    """What one pass over the validation images gives: their latents and embeddings, captions
    and ids, their features when a feature network was given, and the seconds spent on each."""

    latents: torch.Tensor
    embeddings: torch.Tensor
    captions: list[str]
    image_ids: list[int]
    seconds: dict[str, float]
    features: torch.Tensor | None = None


def _embed_and_caption(
    model: GenerativeMultimodalModel,
    loader: torch.utils.data.DataLoader,
    progress: bool,
    num_beams: int = 1,
    features: FeatureNetwork | None = None,
) -> _EncodedImages:
    """Every image encoded once, and captioned from that latent (greedy, or beam search with
    `num_beams`), in one pass; with `features`, also its features (the real side of FD/KID)."""
    latents, embeddings, captions, image_ids, found = [], [], [], [], []
    seconds = {"retrieval": 0.0, "caption": 0.0} | ({"real_features": 0.0} if features else {})
    decoding = {"num_beams": num_beams} if num_beams > 1 else {}
    for batch in tqdm(loader, desc="embed + caption images", unit="batch", disable=not progress):
        start = time.perf_counter()
        with torch.no_grad():
            z, embedding = model.image_encoder(batch["image"].to(model.device))
        latents.append(z.cpu())
        embeddings.append(embedding.cpu())
        embedded = time.perf_counter()
        captions += model.generate_text_from_latent(z, **decoding)
        seconds["retrieval"] += embedded - start
        seconds["caption"] += time.perf_counter() - embedded
        if features:
            start = time.perf_counter()
            found.append(features.features(batch["image"]))
            seconds["real_features"] += time.perf_counter() - start
        image_ids += batch["image_id"].tolist()
    return _EncodedImages(torch.cat(latents), torch.cat(embeddings), captions, image_ids, seconds,
                          torch.cat(found) if features else None)


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
    use_diffusion: bool,
) -> list[Image.Image]:
    """One picture per prompt, in batches, by diffusion (as `sampling` says) or by the fast
    path; the noise of every batch comes from one generator seeded with `seed`. `progress`
    names the progress bar (None: no bar)."""
    images: list[Image.Image] = []
    generator = torch.Generator().manual_seed(seed)
    batches = range(0, len(prompts), batch_size)
    for start in tqdm(batches, desc=progress, unit="batch", disable=progress is None):
        batch = list(prompts[start : start + batch_size])
        drawn = model.generate_image_from_text(batch, sampling, generator, use_diffusion=use_diffusion)
        images += [to_pil(image) for image in drawn]
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
    diffusion = _draw(model, prompts, batch_size, label if progress else None, sampling, seed, use_diffusion=True)
    seconds["t2i"] = time.perf_counter() - start
    start = time.perf_counter()
    fast = _draw(model, prompts, batch_size, "text → image (fast path)" if progress else None, sampling, seed,
                 use_diffusion=False)
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


def _prefixed(prefix: str, scores: Mapping[str, float]) -> dict[str, float]:
    return {f"{prefix}/{name}": value for name, value in scores.items()}


def evaluate_builtin(
    model: GenerativeMultimodalModel,
    dataset: CocoCaptionDataset,
    judge: BuiltinJudge,
    batch_size: int = 64,
    sampling: SamplingConfig | None = None,
    seed: int = 0,
    limit: int | None = None,
    progress: bool = False,
    num_beams: int = 1,
) -> dict[str, float | int]:
    """Every metric of `model` on `dataset` (a validation split of a built-in set, at the model's
    image size) as `judge` measures it, and the seconds each took: retrieval over the canonical
    captions of every kind (an image's positive is its kind's), by cosine and reranked by the
    caption decoder; captions (greedy, or beam search with `num_beams`) parsed back; one picture
    per kind drawn from its canonical caption, by diffusion as `sampling` says (noise from
    `seed`) and by the fast path, and read back. Where the set held kinds out of training, every
    metric also for seen ("seen/…") and unseen ("unseen/…") kinds apart. `limit` keeps the first N validation images and the first N
    kinds, for quick checks; `progress` shows progress bars."""
    sampling = sampling or SamplingConfig()
    started = time.perf_counter()
    split = has_heldout(dataset)
    loader = _loader(dataset, batch_size, limit)
    images = _embed_and_caption(model, loader, progress, num_beams)
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
    model: GenerativeMultimodalModel, dataset: CocoCaptionDataset, **options: Any
) -> dict[str, float | int]:
    """`evaluate_builtin` on a validation split of the shapes set (`options` are its own):
    retrieval over the canonical captions of every combination of the colours the set was drawn
    in (180 for the standard six), captions parsed into the four attributes, text→image read back
    by the pixel reader; on a set with held-out combinations (shapes-holdout) each also for seen
    and unseen combinations."""
    return evaluate_builtin(model, dataset, shapes_judge(dataset_colors(dataset.root)), **options)


def evaluate_scenes(
    model: GenerativeMultimodalModel, dataset: CocoCaptionDataset, **options: Any
) -> dict[str, float | int]:
    """`evaluate_builtin` on a validation split of the scenes set (`options` are its own), for all
    layouts and for pairs seen and never seen together in training: retrieval over the 540
    canonical captions, captions parsed into both objects and their arrangement, and one picture
    per layout read back ("both": colour, shape and place of each object right)."""
    return evaluate_builtin(model, dataset, scenes_judge(), **options)


# The driver of each built-in set, by the name `builtin_dataset_kind` gives it.
BUILTIN_DRIVERS: dict[str, Callable[..., dict[str, float | int]]] = {
    "shapes": evaluate_shapes, "scenes": evaluate_scenes,
}


def _prompts(positives: Sequence[Sequence[int]], count: int) -> list[int]:
    """`count` captions to draw pictures for, as indices into the texts: each image's first
    caption in turn, then each one's second, and so on (so every image is drawn once before any
    twice, and no caption twice)."""
    rounds = max((len(texts) for texts in positives), default=0)
    order = [texts[r] for r in range(rounds) for texts in positives if r < len(texts)]
    if count > len(order):
        raise InvalidInputError(f"--num-t2i {count}: the {len(positives)} images evaluated have {len(order)} "
                                f"captions, one picture each; ask for at most {len(order)}")
    return order[:count]


def _judge_pictures(
    model: GenerativeMultimodalModel,
    features: FeatureNetwork,
    real: torch.Tensor,
    texts: Sequence[str],
    text_emb: torch.Tensor,
    owners: Sequence[int],
    prompts: Sequence[int],
    batch_size: int,
    sampling: SamplingConfig,
    seed: int,
    progress: bool,
) -> tuple[dict[str, float | int | str], dict[str, float]]:
    """One picture by diffusion for each of `prompts` (indices into `texts`, whose embeddings are
    `text_emb` and whose images are `owners`), judged against the real images' `features`:
    Fréchet distance and KID of their features, R-precision and mean cosine with the model's
    own encoders; and the seconds each took. A distance that cannot be computed on so few
    images says so in place of its number."""
    seconds = dict.fromkeys(("t2i", "t2i_features", "t2i_embed"), 0.0)
    drawn, pictures_emb = [], []
    generator = torch.Generator().manual_seed(seed)  # the same noise every run
    batches = range(0, len(prompts), batch_size)
    label = f"text → image ({sampling.describe()})"
    for start in tqdm(batches, desc=label, unit="batch", disable=not progress):
        batch = [texts[t] for t in prompts[start : start + batch_size]]
        began = time.perf_counter()
        pictures = model.generate_image_from_text(batch, sampling, generator)
        pictures = ((pictures.float() + 1) * 127.5).round() / 127.5 - 1  # as a saved picture is: 8 bits
        drawn_at = time.perf_counter()
        drawn.append(features.features(pictures))
        featured = time.perf_counter()
        pictures_emb.append(model.encode_image(pictures).float().cpu())
        seconds["t2i"] += drawn_at - began
        seconds["t2i_features"] += featured - drawn_at
        seconds["t2i_embed"] += time.perf_counter() - featured
    fake, pictures_emb = torch.cat(drawn), torch.cat(pictures_emb)
    names = ("the real images", "the pictures drawn")
    metrics: dict[str, float | int | str] = {}

    start = time.perf_counter()
    try:
        metrics[f"t2i/{features.fd_name}"] = frechet_distance(real, fake, names=names)
    except TooFewSamplesError as error:
        metrics[f"t2i/{features.fd_name}"] = f"not computed: {error}"
    seconds[features.fd_name] = time.perf_counter() - start

    start = time.perf_counter()
    subset_size = min(KID_SUBSET_SIZE, len(real), len(fake))
    try:
        kid, kid_std = kernel_inception_distance(real, fake, KID_SUBSETS, subset_size, seed=seed, names=names)
        metrics |= {f"t2i/{features.kid_name}": kid, f"t2i/{features.kid_name}_std": kid_std,
                    f"t2i/{features.kid_name}_subset": subset_size}
    except TooFewSamplesError as error:
        metrics[f"t2i/{features.kid_name}"] = f"not computed: {error}"
    seconds[features.kid_name] = time.perf_counter() - start

    start = time.perf_counter()
    captions_of = Counter(owners)
    negatives = min(R_PRECISION_NEGATIVES, len(texts) - max(captions_of[owners[t]] for t in prompts))
    if negatives >= 1:
        metrics["t2i/R-precision_own_encoders"] = r_precision(pictures_emb, text_emb, prompts, owners, negatives,
                                                              seed)
        metrics["t2i/R-precision_candidates"] = negatives + 1
    else:
        metrics["t2i/R-precision_own_encoders"] = "not computed: no caption of another image to rank against"
    seconds["R-precision"] = time.perf_counter() - start
    start = time.perf_counter()
    metrics["t2i/CLIP-score_own_encoders"] = mean_cosine(pictures_emb, text_emb[list(prompts)])
    seconds["CLIP-score"] = time.perf_counter() - start
    return metrics, seconds


def _caption_metrics(references: Mapping[int, Sequence[str]], captions: Mapping[int, str]) -> dict[str, float | str]:
    """BLEU-4 and CIDEr-D, PTB-tokenised as papers are where Java runs, else Java-free and labelled so."""
    ptb = ptb_available()
    if ptb:
        try:
            scores = caption_scores(references, captions, ptb=True)
        except PTBTokenizerError as error:
            warnings.warn(f"{error}; captions are scored with the Java-free tokenisation instead", stacklevel=2)
            ptb = False
    if not ptb:
        scores = caption_scores(references, captions)
    tokenization = "PTB (as papers)" if ptb else "Java-free (no Java: not comparable with papers)"
    return {"caption/BLEU-4": scores["BLEU-4"], "caption/CIDEr-D": scores["CIDEr"],
            "caption/tokenization": tokenization}


def evaluate_captions(
    model: GenerativeMultimodalModel,
    dataset: torch.utils.data.Dataset,
    batch_size: int = 64,
    limit: int | None = None,
    progress: bool = False,
    num_beams: int = 1,
    features: FeatureNetwork | None = None,
    num_t2i: int | None = None,
    sampling: SamplingConfig | None = None,
    seed: int = 0,
) -> dict[str, float | int | str]:
    """Every metric of `model` on `dataset` (a validation split of any captioned layout, at the
    model's image size, with each image's captions in `dataset.references`), and the seconds each
    took: retrieval R@1/5/10 both ways over every caption of the images evaluated (an image's
    positives are its own captions), and averaged over folds of 1,000 images where there are
    more; BLEU-4 and CIDEr-D of captions (greedy, or beam search with `num_beams`) against each
    image's references. With a feature network `features`, text→image too: one picture by
    diffusion (as `sampling` says, noise from `seed`) for each of `num_t2i` captions (default:
    one per image), judged by `_judge_pictures`. `limit` keeps the first N images."""
    sampling = sampling or SamplingConfig()
    if features and not isinstance(dataset, torch.utils.data.IterableDataset):  # a stream is counted as read
        known = [range(len(captions)) for captions in itertools.islice(dataset.references.values(), limit)]
        _prompts(known, len(known) if num_t2i is None else num_t2i)  # too many: said before the long pass
    started = time.perf_counter()
    loader = _loader(dataset, batch_size, limit)
    images = _embed_and_caption(model, loader, progress, num_beams, features)
    references = dataset.references  # a stream knows them once read
    image_ids, captions, seconds = images.image_ids, images.captions, images.seconds

    start = time.perf_counter()
    texts: list[str] = []
    positives: list[list[int]] = []
    owners: list[int] = []
    for image_id in image_ids:
        positives.append(list(range(len(texts), len(texts) + len(references[image_id]))))
        texts += references[image_id]
        owners += [image_id] * len(references[image_id])
    prompts = _prompts(positives, len(image_ids) if num_t2i is None else num_t2i) if features else []
    text_emb = _embed_texts(model, texts, batch_size)
    retrieval = _prefixed("retrieval", retrieval_recall(images.embeddings, text_emb, positives, ks=(1, 5, 10)))
    if len(image_ids) > RETRIEVAL_FOLD:
        folds = retrieval_recall_folds(images.embeddings, text_emb, positives, RETRIEVAL_FOLD, ks=(1, 5, 10))
        retrieval |= {"retrieval_1k/folds": len(image_ids) // RETRIEVAL_FOLD} | _prefixed("retrieval_1k", folds)
    seconds["retrieval"] += time.perf_counter() - start

    start = time.perf_counter()
    scores = _caption_metrics({image_id: references[image_id] for image_id in image_ids},
                              dict(zip(image_ids, captions)))
    seconds["caption"] += time.perf_counter() - start

    pictures: dict[str, float | int | str] = {}
    if features:
        pictures, picture_seconds = _judge_pictures(
            model, features, images.features, texts, text_emb, owners, prompts, batch_size, sampling, seed, progress
        )
        seconds |= picture_seconds
    seconds["total"] = time.perf_counter() - started

    return (
        {"images": len(image_ids), "captions": len(texts)}
        | ({"prompts": len(prompts)} if features else {})
        | retrieval
        | {"caption/num_beams": num_beams}
        | scores
        | pictures
        | _prefixed("seconds", seconds)
    )
