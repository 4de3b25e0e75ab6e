"""Train/val/test splits: a source's predefined split, or a seeded split that balances the classes: their pixel
shares (groups of similar class mixtures), or which classes each image holds (multi-label, for object datasets)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.model_selection import train_test_split

from segpipe.data.canonical import Categories
from segpipe.data.label_stats import empty_class_warnings, ignore_share, ignore_warnings, missing_from_eval_splits
from segpipe.errors import SegpipeError
from segpipe.params import SplitParams

SPLITS = ("train", "val", "test")


def _has_predefined(manifest: pd.DataFrame) -> bool:
    return bool(manifest.source_split.isin(SPLITS).all())


def _strata(shares: np.ndarray, n_groups: int, seed: int) -> np.ndarray:
    """Group samples with similar class mixtures, so each split can take its share of every group."""
    n_groups = max(1, min(n_groups, len(shares) // 4, len(np.unique(shares, axis=0))))
    if n_groups == 1:
        return np.zeros(len(shares), dtype=int)
    return KMeans(n_clusters=n_groups, n_init=4, random_state=seed).fit_predict(shares)


def _stratified(ids: np.ndarray, strata: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Take ``count`` of ``ids`` out, in proportion to the strata when every stratum can give one."""
    counts = np.bincount(strata)
    groups = np.count_nonzero(counts)
    can_stratify = counts[counts > 0].min() >= 2 and groups <= count <= len(ids) - groups
    return train_test_split(ids, test_size=count, random_state=seed, stratify=strata if can_stratify else None)


def _pick(candidates: np.ndarray, *keys: np.ndarray, rng: np.random.Generator) -> int:
    """Among ``candidates``, the index with the largest first key, then the largest next key, then a random one."""
    for key in keys:
        candidates = candidates & (key == key[candidates].max())
    return int(rng.choice(np.flatnonzero(candidates)))


def _classes_present_split(present: np.ndarray, sizes: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    """Multi-label iterative stratification (Sechidis et al., 2011) with exact split sizes: the rarest class
    first, each of its samples goes to a split that has none of that class yet (so that a class in three images
    reaches train, val and test), else to the split that still wants the class most, then the emptiest one."""
    rng = np.random.default_rng(seed)
    capacity = np.array(list(sizes.values()), dtype=np.float64)
    demand = (capacity / capacity.sum())[:, None] * present.sum(axis=0)[None, :]
    held = np.zeros_like(demand)
    takes_any = capacity > 0  # a split of size 0 (split.test: 0) never needs a class
    assigned = np.full(len(present), -1)
    order = rng.permutation(len(present))
    while (assigned < 0).any():
        open_samples = order[assigned[order] < 0]
        per_class = present[open_samples].sum(axis=0)
        if per_class.any():
            label = int(np.argmin(np.where(per_class > 0, per_class, np.inf)))
            batch = open_samples[present[open_samples, label]]
        else:
            label, batch = None, open_samples  # samples without any class: only the sizes matter
        for index in batch:
            room = capacity > 0
            if label is None:
                best = _pick(room, capacity, rng=rng)
            else:
                lacking = ((held[:, label] == 0) & takes_any).astype(np.float64)
                best = _pick(room, lacking, demand[:, label], capacity, rng=rng)
            assigned[index] = best
            capacity[best] -= 1
            demand[best] -= present[index]
            held[best] += present[index]
    return {name: np.flatnonzero(assigned == i) for i, name in enumerate(sizes)}


def _pixel_strata(manifest: pd.DataFrame, seed: int) -> np.ndarray:
    pixels = np.array(manifest.class_pixels.tolist(), dtype=np.float64)
    shares = pixels / np.maximum(pixels.sum(axis=1, keepdims=True), 1)
    return _strata(shares, n_groups=8, seed=seed)


def _ratio_split(manifest: pd.DataFrame, params: SplitParams, seed: int) -> dict[str, pd.DataFrame]:
    n = len(manifest)
    n_val, n_test = round(n * params.val), round(n * params.test)
    if n - n_val - n_test < 1 or (params.val and not n_val) or (params.test and not n_test):
        raise SegpipeError(f"only {n} samples: too few for split.val={params.val}, split.test={params.test}")
    if params.stratify == "classes_present":
        present = np.array(manifest.class_pixels.tolist()) > 0
        parts = _classes_present_split(present, {"train": n - n_val - n_test, "val": n_val, "test": n_test}, seed)
        return {name: manifest.iloc[idx].reset_index(drop=True) for name, idx in parts.items()}
    strata = _pixel_strata(manifest, seed)
    ids = np.arange(n)
    parts = {"train": ids, "val": ids[:0], "test": ids[:0]}
    if n_val + n_test:
        parts["train"], rest = _stratified(ids, strata, n_val + n_test, seed)
        if n_val and n_test:
            parts["val"], parts["test"] = _stratified(rest, strata[rest], n_test, seed)
        else:
            parts["val" if n_val else "test"] = rest
    return {name: manifest.iloc[np.sort(idx)].reset_index(drop=True) for name, idx in parts.items()}


def _complete(parts: dict[str, pd.DataFrame], params: SplitParams, seed: int) -> str:
    """Fill the splits a source does not predefine; says how. A source with train and val but no test (PASCAL
    VOC) reports on its val, as is usual: val becomes test, and a new val is carved out of train."""
    how = "predefined"
    if parts["test"].empty and not parts["val"].empty:
        parts["test"], parts["val"] = parts["val"], parts["val"].iloc[:0]
        how += "; the source's val is the test split"
    carve = [name for name in ("val", "test") if parts[name].empty and getattr(params, name) > 0]
    if carve:
        ratios = SplitParams(val=params.val if "val" in carve else 0.0, test=params.test if "test" in carve else 0.0,
                             stratify=params.stratify)
        pieces = _ratio_split(parts["train"], ratios, seed)
        parts.update({name: pieces[name] for name in ("train", *carve)})
        how += f"; {' and '.join(carve)} carved from train (split.{' / split.'.join(carve)})"
    return how


def split(manifest: pd.DataFrame, params: SplitParams, seed: int) -> tuple[dict[str, pd.DataFrame], str]:
    """Split the clean manifest; returns the parts (train, val, test) and how they were made."""
    use_predefined = params.predefined == "use" or (params.predefined == "auto" and _has_predefined(manifest))
    if use_predefined:
        if not _has_predefined(manifest):
            raise SegpipeError("split.predefined is 'use' but some samples have no train/val/test source split")
        parts = {name: manifest[manifest.source_split == name].reset_index(drop=True) for name in SPLITS}
        how = _complete(parts, params, seed)
    else:
        parts, how = _ratio_split(manifest, params, seed), "ratio"
    return parts, how


def labelled_subset(train: pd.DataFrame, fraction: float, stratify: str, seed: int) -> pd.DataFrame:
    """The seeded ``fraction`` of the train split whose labels train the model (at least one image), stratified as
    the split is (``stratify``: pixel_shares or classes_present), in the split's order."""
    keep = max(1, round(len(train) * fraction))
    if keep >= len(train):
        return train
    if stratify == "classes_present":
        present = np.array(train.class_pixels.tolist()) > 0
        kept = _classes_present_split(present, {"kept": keep, "left": len(train) - keep}, seed)["kept"]
    else:
        _, kept = _stratified(np.arange(len(train)), _pixel_strata(train, seed), keep, seed)
    return train.iloc[np.sort(kept)].reset_index(drop=True)


def class_shares(parts: dict[str, pd.DataFrame], names: list[str]) -> dict[str, dict[str, float]]:
    """Per split, the share of labelled pixels that each class takes."""
    shares = {}
    for split_name, frame in parts.items():
        totals = np.zeros(len(names))
        if len(frame):
            totals = np.array(frame.class_pixels.tolist(), dtype=np.float64).sum(axis=0)
        total = max(totals.sum(), 1.0)
        shares[split_name] = {name: round(float(v / total), 5) for name, v in zip(names, totals, strict=True)}
    return shares


def _pixels(frame: pd.DataFrame, num_classes: int) -> tuple[np.ndarray, int]:
    if frame.empty:
        return np.zeros(num_classes, dtype=np.int64), 0
    pixels = np.array(frame.class_pixels.tolist(), dtype=np.int64).sum(axis=0)
    return pixels, int(frame.ignore_pixels.sum()) if "ignore_pixels" in frame else 0


def coverage(parts: dict[str, pd.DataFrame], categories: Categories, threshold: float) -> dict:
    """Per split: classes with no pixels and the ignore share; warnings for train gaps, eval gaps and ignore."""
    counted = {name: _pixels(frame, categories.num_classes) for name, frame in parts.items()}
    warnings = empty_class_warnings(counted["train"][0], categories, "train")
    for name, (pixels, ignored) in counted.items():
        warnings += ignore_warnings(pixels, ignored, threshold, name)
    warnings += missing_from_eval_splits({name: pixels for name, (pixels, _) in counted.items()}, categories)
    return {
        "classes_without_pixels": {name: [categories.names[i] for i in np.flatnonzero(pixels == 0)]
                                   for name, (pixels, _) in counted.items() if len(parts[name])},
        "ignore_share": {name: round(ignore_share(pixels, ignored), 5) for name, (pixels, ignored) in counted.items()},
        "warnings": warnings,
    }
