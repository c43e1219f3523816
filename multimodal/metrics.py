"""Metrics of generated output against the truth: retrieval R@K, BLEU and CIDEr-D, attribute
accuracy, and the distances between two sets of image features that judge generated pictures
(Fréchet distance, KID), R-precision and mean cosine. Plain functions of tensors, arrays and
strings; `multimodal/evaluation/` runs them over a data set."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

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


def retrieval_recall_folds(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    positives: Sequence[Sequence[int]],
    fold_size: int = 1000,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """`retrieval_recall` on each fold of `fold_size` consecutive images with their own texts
    (`positives[i]`: image i's), averaged over the folds: COCO's "1k test" as papers report
    it (the 5,000 Karpathy test images in five folds). Images past the last full fold are left
    out; a ValueError where there is no full fold."""
    folds = len(positives) // fold_size
    if folds == 0:
        raise ValueError(f"{len(positives)} images make no fold of {fold_size}")
    total: dict[str, float] = {}
    for fold in range(folds):
        images = range(fold * fold_size, (fold + 1) * fold_size)
        texts = [t for i in images for t in positives[i]]
        index = {t: position for position, t in enumerate(texts)}
        recall = retrieval_recall(image_emb[images.start : images.stop], text_emb[texts],
                                  [[index[t] for t in positives[i]] for i in images], ks)
        total = {name: total.get(name, 0.0) + value for name, value in recall.items()}
    return {name: value / folds for name, value in total.items()}


class TooFewSamplesError(ValueError):
    """Too few samples for a distance to mean anything: said, rather than a number printed."""


class PTBTokenizerError(RuntimeError):
    """Java is there but the PTB tokeniser did not run (the message says why)."""


def ptb_available() -> bool:
    """Whether captions can be PTB-tokenised here: the tokeniser is Java (pycocoevalcap ships its jar)."""
    return shutil.which("java") is not None


def ptb_tokenize(texts: Sequence[str]) -> list[str]:
    """Each text as the COCO caption evaluation tokenises it (pycocoevalcap's PTBTokenizer:
    Stanford CoreNLP 3.4.1's PTB tokeniser in lower case, its punctuation list dropped), which is
    what papers' BLEU and CIDEr-D are computed on. Same command and punctuation list as the
    library's wrapper, which writes its input into its own install folder and does not notice a
    failed run; here the text is piped in and the result checked (PTBTokenizerError)."""
    from pycocoevalcap.tokenizer import ptbtokenizer

    jar = Path(ptbtokenizer.__file__).with_name(ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR)
    lines = "\n".join(text.replace("\r", " ").replace("\n", " ") for text in texts)
    command = ["java", "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase",
               "-encoding", "utf-8"]
    try:
        result = subprocess.run(command, input=lines.encode(), capture_output=True, timeout=3600, check=True)
    except (OSError, subprocess.SubprocessError) as error:
        raise PTBTokenizerError(f"the PTB tokeniser (java -cp {jar.name}) failed: {error}") from None
    tokenized = result.stdout.decode("utf-8", errors="replace").split("\n")
    if tokenized and tokenized[-1] == "" and len(tokenized) == len(texts) + 1:
        tokenized.pop()
    if len(tokenized) != len(texts):
        raise PTBTokenizerError(f"the PTB tokeniser gave {len(tokenized)} lines for {len(texts)} captions")
    return [" ".join(w for w in line.rstrip().split(" ") if w not in ptbtokenizer.PUNCTUATIONS) for line in tokenized]


def caption_scores(
    references: Mapping[Hashable, Sequence[str]], candidates: Mapping[Hashable, str], ptb: bool = False
) -> dict[str, float]:
    """BLEU-1…4 and CIDEr-D (pycocoevalcap's Cider, which is the COCO server's CIDEr-D: clipped
    counts and a length penalty; reported under "CIDEr") of one candidate caption per image
    against its reference captions.

    With `ptb`, tokenised by `ptb_tokenize` as the COCO caption evaluation and papers do (needs
    Java; PTBTokenizerError when it fails); else here, Java-free (lower case, punctuation
    dropped), which gives close but not comparable numbers. CIDEr weighs n-grams by how rare
    they are across images, so it needs several images to mean anything (with one image it is 0).
    """
    from pycocoevalcap.bleu.bleu import Bleu  # imported here: a large package only COCO scoring needs
    from pycocoevalcap.cider.cider import Cider

    keys = list(candidates)
    if ptb:
        texts = [r for key in keys for r in references[key]] + [candidates[key] for key in keys]
        tokenized = iter(ptb_tokenize(texts))
        refs = {key: [next(tokenized) for _ in references[key]] for key in keys}
        cands = {key: [next(tokenized)] for key in keys}
    else:
        refs = {key: [" ".join(words(r)) for r in references[key]] for key in keys}
        cands = {key: [" ".join(words(candidates[key]))] for key in keys}
    bleu, _ = Bleu(4).compute_score(refs, cands, verbose=0)
    cider, _ = Cider().compute_score(refs, cands)
    scores = {f"BLEU-{n}": float(score) for n, score in enumerate(bleu, start=1)}
    return scores | {"CIDEr": float(cider)}


# -- judging generated pictures by their features ---------------------------------------------
def _features(features: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    """`features` as a float64 (n, d) array; a ValueError naming `name` for anything else."""
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().double().numpy()
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be features of shape (n, d), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or infinite features")
    return array


def _two_sets(features_a, features_b, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    a, b = _features(features_a, names[0]), _features(features_b, names[1])
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{names[0]} has {a.shape[1]} features per image, {names[1]} {b.shape[1]}")
    for name, x in zip(names, (a, b)):
        if len(x) < 2:
            raise TooFewSamplesError(f"{name}: {len(x)} image{'s' if len(x) != 1 else ''}; a distance between "
                                     "sets of images needs at least 2 in each")
    return a, b


def frechet_distance(
    features_a: np.ndarray | torch.Tensor,
    features_b: np.ndarray | torch.Tensor,
    *,
    names: tuple[str, str] = ("features_a", "features_b"),
) -> float:
    """Fréchet distance between Gaussians fitted to two sets of image features (n, d):
    ‖μa − μb‖² + tr(Σa + Σb − 2 (Σa Σb)^½), which is FID (Heusel et al. 2017) when the features
    are the FID Inception network's 2048 pool features. Unbiased covariances (n − 1), as
    pytorch-fid and torchmetrics; float64 throughout, the square root by scipy.linalg.sqrtm.

    Each set needs more images than features: with n ≤ d its covariance is singular and the
    distance ill-conditioned (it swings with which images happen to be drawn), so that is a
    TooFewSamplesError saying so, not a number. `names` name the sets in messages."""
    from scipy import linalg

    a, b = _two_sets(features_a, features_b, names)
    for name, x in zip(names, (a, b)):
        if len(x) <= x.shape[1]:
            raise TooFewSamplesError(
                f"{name}: {len(x)} images for {x.shape[1]} features; the Fréchet distance is ill-conditioned with "
                f"no more images than features (a singular covariance): it needs at least {x.shape[1] + 1}"
            )
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():
        raise TooFewSamplesError(f"the covariances of {names[0]} and {names[1]} are too close to singular for "
                                 "the Fréchet distance's matrix square root; use more images")
    diff = mean_a - mean_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root.real))


def kernel_inception_distance(
    features_a: np.ndarray | torch.Tensor,
    features_b: np.ndarray | torch.Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    *,
    seed: int = 0,
    names: tuple[str, str] = ("features_a", "features_b"),
) -> tuple[float, float]:
    """KID (Bińkowski et al. 2018) of two sets of image features (n, d): the unbiased MMD² under
    the cubic kernel k(x, y) = (x·y / d + 1)³ between random subsets of `subset_size` of each,
    as (mean, standard deviation) over `subsets` draws, float64. Unbiased at any size, so
    unlike the Fréchet distance it means something on small sets. The subsets are those
    torchmetrics' KernelInceptionDistance draws after torch.manual_seed(seed) (torch.randperm
    of set a, then of set b, per subset), so the two agree on the same features."""
    a, b = _two_sets(features_a, features_b, names)
    if subsets < 1:
        raise ValueError(f"subsets must be at least 1, got {subsets}")
    if subset_size < 2 or subset_size > min(len(a), len(b)):
        raise TooFewSamplesError(f"a KID subset of {subset_size} needs 2 to {min(len(a), len(b))} images "
                                 f"({len(a)} in {names[0]}, {len(b)} in {names[1]})")
    generator = torch.Generator().manual_seed(seed)
    m, d = subset_size, a.shape[1]
    scores = []
    for _ in range(subsets):
        x = a[torch.randperm(len(a), generator=generator)[:m].numpy()]
        y = b[torch.randperm(len(b), generator=generator)[:m].numpy()]
        k_xx, k_yy, k_xy = ((p @ q.T / d + 1) ** 3 for p, q in ((x, x), (y, y), (x, y)))
        within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
        scores.append(within - 2 * k_xy.sum() / m**2)
    return float(np.mean(scores)), float(np.std(scores))


def r_precision(
    picture_emb: torch.Tensor,
    text_emb: torch.Tensor,
    prompts: Sequence[int],
    owners: Sequence[Hashable],
    negatives: int = 99,
    seed: int = 0,
) -> float:
    """R-precision as AttnGAN (Xu et al. 2018) measures text→image, with r = 1: picture i
    (row i of `picture_emb`) ranks its prompt (text `prompts[i]` of `text_emb`) by cosine among
    itself and `negatives` texts of other images (`owners[t]` is the image text t describes),
    drawn at random with `seed`; the fraction of pictures whose prompt comes first. A tie counts
    against it. TooFewSamplesError when some prompt has fewer than `negatives` texts of other
    images to be ranked against."""
    if len(prompts) != len(picture_emb):
        raise ValueError(f"{len(picture_emb)} pictures but {len(prompts)} prompts")
    pictures = F.normalize(picture_emb.detach().double().cpu(), dim=-1)
    texts = F.normalize(text_emb.detach().double().cpu(), dim=-1)
    codes = {owner: code for code, owner in enumerate(dict.fromkeys(owners))}
    owner_array = np.array([codes[owner] for owner in owners])
    rng = np.random.default_rng(seed)
    pools: dict[int, np.ndarray] = {}
    candidates = np.empty((len(prompts), negatives + 1), dtype=np.int64)
    for i, prompt in enumerate(prompts):
        owner = owner_array[prompt]
        if owner not in pools:
            pools[owner] = np.flatnonzero(owner_array != owner)
        if len(pools[owner]) < negatives:
            raise TooFewSamplesError(f"R-precision ranks each prompt against {negatives} captions of other images; "
                                     f"there are only {len(pools[owner])}")
        candidates[i, 0] = prompt
        candidates[i, 1:] = rng.choice(pools[owner], negatives, replace=False)
    scores = torch.einsum("nd,nkd->nk", pictures, texts[torch.from_numpy(candidates)])
    return float((scores[:, 1:] < scores[:, :1]).all(dim=1).double().mean())


def mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """The mean cosine of rows a[i] and b[i]: a CLIP-score (Hessel et al. 2021, without its
    ×2.5 and clipping) when they are a picture's and its prompt's embeddings."""
    if a.shape != b.shape:
        raise ValueError(f"{tuple(a.shape)} and {tuple(b.shape)} embeddings: one of each per pair")
    return float(F.cosine_similarity(a.detach().double().cpu(), b.detach().double().cpu(), dim=-1).mean())
