"""Reader for a folder of images plus single-channel (or colour-coded) label masks matched by file stem."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segpipe.data.canonical import SEMANTIC_DIR, Categories, Category, copy_image, new_row
from segpipe.data.imageio import DecodeError, load_color_label, load_label, save_label
from segpipe.errors import SegpipeError
from segpipe.params import MaskFolderParams

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
MASK_SUFFIXES = {".png", ".bmp", ".tif", ".tiff"}


def categories_from(params: MaskFolderParams) -> Categories:
    """The canonical class list: classes numbered 0..n-1 in the order params give them."""
    items = tuple(Category(i, c.name, c.color, c.isthing) for i, c in enumerate(params.classes))
    return Categories(items, Categories.ignore_for(len(items)))


def label_lookup(params: MaskFolderParams, ignore: int) -> dict[int, int]:
    """Source label value -> canonical value, for every value that changes (ignore included)."""
    lookup: dict[int, int] = {params.ignore_index: ignore}
    for source, target in params.label_map.items():
        lookup[int(source)] = ignore if target == "ignore" else int(target)
    return lookup


@dataclass(frozen=True)
class MaskFolderSample:
    """One (image, mask) pair to bring into the canonical layout; either side may be missing.

    ``image`` and ``mask`` are relative to the source ``root``, and so is every path the manifest records: the
    same data reached through another spelling of ``ingest.source`` (absolute or relative, another temporary
    folder for an archive) gives the same manifest, so DVC reruns nothing after ingest.
    """

    sample_id: str
    root: Path
    image: str | None
    mask: str | None
    source_split: str
    encoding: str
    lookup: tuple[tuple[int, int], ...]
    colors: tuple[tuple[int, int, int], ...]
    ignore_colors: tuple[tuple[int, int, int], ...]
    ignore: int

    def materialize(self, out_dir: Path) -> dict:
        row = new_row(self.sample_id, self.source_split, self.image or self.mask)
        if self.image is None:
            row["issue"] = f"missing_image: mask {self.mask} has no image with the same stem"
            return row
        if not copy_image(self.root / self.image, out_dir, row) and row["issue"]:  # too large: not even decoded
            return row
        if self.mask is None:
            row["issue"] = f"missing_mask: image {self.image} has no mask with the same stem"
            return row
        try:
            labels = self._color_labels(row) if self.encoding == "color" else self._index_labels(row)
        except DecodeError as exc:
            row["issue"] = f"corrupt_mask: {str(exc).replace(str(self.root / self.mask), self.mask)}"
            return row
        semantic = out_dir / SEMANTIC_DIR / f"{self.sample_id}.png"
        save_label(labels, semantic)
        row["semantic"] = str(semantic)
        return row

    def _color_labels(self, row: dict) -> np.ndarray:
        """Class ids from colours; colours of no class and no ignore colour become ignore and are reported."""
        rgb = load_color_label(self.root / self.mask).astype(np.int64)
        packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        labels = np.full(packed.shape, self.ignore, dtype=np.int64)
        known = np.zeros(packed.shape, dtype=bool)
        for class_id, (r, g, b) in enumerate(self.colors):
            hit = packed == ((r << 16) | (g << 8) | b)
            labels[hit], known[hit] = class_id, True
        for r, g, b in self.ignore_colors:
            known |= packed == ((r << 16) | (g << 8) | b)
        unknown = sorted({(int(v >> 16), int((v >> 8) & 255), int(v & 255)) for v in np.unique(packed[~known])})
        if unknown:
            shown = [list(c) for c in unknown[:5]] + (["..."] if len(unknown) > 5 else [])
            row["issue"] = f"unknown_color: colours {shown} in {self.mask} are neither class colours nor ignore_colors"
        return labels

    def _index_labels(self, row: dict) -> np.ndarray:
        """Class ids from source values through the lookup; the source values are kept for clean's hints."""
        raw = load_label(self.root / self.mask).astype(np.int64)
        row["source_values"] = np.unique(raw).tolist()
        labels = raw.copy()
        for source, target in self.lookup:
            labels[raw == source] = target
        return labels


def files_by_stem(folder: Path, suffixes: set[str], strip: str = "", kind: str = "image") -> dict[str, Path]:
    """The files of ``folder`` with one of ``suffixes``, by the stem that pairs them (``strip`` removed); two
    files with one stem (``a.png`` and ``a.jpg``) are an error naming both, as either could be meant."""
    if not folder.is_dir():
        raise SegpipeError(f"{folder}: folder not found; check ingest.mask_folder (images/masks/splits)")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in suffixes and not path.name.startswith("."):
            stem = path.stem[: -len(strip)] if strip and path.stem.endswith(strip) else path.stem
            if stem in found:
                raise SegpipeError(f"{found[stem]} and {path} are two {kind}s with the stem '{stem}'; rename one of "
                                   f"them (files are paired by stem, so either could be meant)")
            found[stem] = path
    return found


def _relative(path: Path | None, root: Path) -> str | None:
    return None if path is None else path.relative_to(root).as_posix()


def plan(root: Path, params: MaskFolderParams) -> tuple[Categories, list[MaskFolderSample]]:
    """List every sample of a mask folder dataset (pairs, and unpaired files so clean can report them)."""
    categories = categories_from(params)
    lookup = tuple(sorted(label_lookup(params, categories.ignore_index).items()))
    colors = tuple(tuple(c.color) for c in params.classes)
    ignore_colors = tuple(tuple(c) for c in params.ignore_colors)
    groups = {"": (params.images, params.masks)}
    if params.splits:
        groups = {name: (folders.images, folders.masks) for name, folders in params.splits.items()}
    samples = []
    for split, (image_dir, mask_dir) in groups.items():
        images = files_by_stem(root / image_dir, IMAGE_SUFFIXES)
        masks = files_by_stem(root / mask_dir, MASK_SUFFIXES, params.mask_suffix, "mask")
        for stem in sorted(images.keys() | masks.keys()):
            sample_id = f"{split}_{stem}" if split else stem
            image, mask = (_relative(found.get(stem), root) for found in (images, masks))
            samples.append(
                MaskFolderSample(sample_id, root, image, mask, split, params.mask_encoding, lookup, colors,
                                 ignore_colors, categories.ignore_index)
            )
    if not samples:
        raise SegpipeError(f"{root}: no images or masks found; check ingest.mask_folder.images/masks/splits")
    return categories, samples
