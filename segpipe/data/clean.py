"""Validate every canonical sample: reject, repair or fail per params, and report every decision."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from segpipe.data.canonical import SEMANTIC_DIR, Categories
from segpipe.data.imageio import DecodeError, TooLarge, load_image, load_label, save_label, set_pixel_limit
from segpipe.data.label_stats import binary_mask_hint, empty_class_warnings, ignore_share, ignore_warnings
from segpipe.errors import SegpipeError
from segpipe.parallel import parallel_map
from segpipe.params import CleanParams

FIXES = {
    "missing_image": "add the image with the same file stem, or remove the mask",
    "missing_mask": "add a mask with the same file stem, or remove the image",
    "corrupt_image": "re-export the image (it is truncated or not an image) or remove it",
    "too_large": "shrink the image (and its mask), or raise clean.max_pixels if the machine has the memory",
    "corrupt_mask": "re-export the mask as a single-channel PNG or remove the sample",
    "size_mismatch": "re-export the mask at the image size, or set clean.on_size_mismatch: resize_mask",
    "label_out_of_range": "add the values to the class list or ingest.mask_folder.label_map, "
    "or set clean.on_label_out_of_range: to_ignore",
    "unknown_color": "add the colours to ingest.mask_folder.classes (or ingest.mask_folder.ignore_colors when they "
    "mean 'not labelled'), or set clean.on_label_out_of_range: to_ignore",
    "all_ignore": "label the image or remove it; set clean.on_all_ignore: keep to train on it anyway",
    "duplicate": "remove the copy; set clean.on_duplicate: keep to keep both",
    "converted": "none needed: the image was converted on read",
    "unknown_category": "add the category to the dataset's category list (or the class names), or remove the object",
    "degenerate_polygon": "redraw the object with at least 3 points, or remove it",
    "zero_area": "redraw the object so that it covers pixels, or remove it",
    "bad_segmentation": "give the object COCO polygons or an RLE of the image's size",
    "bad_coordinates": "fix the polygon's points: they must be finite pixel positions in or near the image",
    "pixel_coordinates": "write YOLO-seg coordinates as fractions of the image size: x / width and y / height",
    "unlisted_segment": "list the segment id in the image's segments_info (with its category), or set its pixels to 0",
    "clipped_polygon": "none needed: the points outside the image were clipped to it",
    "overlap": "none needed: each pixel belongs to the smallest object on it; check the annotations if unexpected",
    "exif_oriented": "none needed: EXIF orientation is applied on read and the mask matches the oriented image",
}
POLICY = {
    "missing_image": "on_unpaired", "missing_mask": "on_unpaired", "corrupt_image": "on_corrupt",
    "too_large": "on_corrupt", "corrupt_mask": "on_corrupt", "size_mismatch": "on_size_mismatch",
    "label_out_of_range": "on_label_out_of_range",
    "unknown_color": "on_label_out_of_range", "all_ignore": "on_all_ignore", "duplicate": "on_duplicate",
    **{reason: "on_object_defect" for reason in ("unknown_category", "degenerate_polygon", "zero_area",
                                                 "bad_segmentation", "bad_coordinates", "pixel_coordinates",
                                                 "unlisted_segment")},
}
OBJECT_DROPS = {r for r, policy in POLICY.items() if policy == "on_object_defect"}  # left out, the sample stays
TO_IGNORE = {"label_out_of_range", "unknown_color"}  # what clean.on_label_out_of_range: to_ignore repairs
REJECT_COLUMNS = ["sample_id", "reason", "action", "detail", "file", "fix"]


@dataclass
class Verdict:
    """What clean decided about one sample: a defect (or none), repairs made (reason, detail, file repaired),
    pixel counts per class and of ignore."""

    sample_id: str
    defect: str = ""
    detail: str = ""
    file: str = ""
    repairs: list[tuple[str, str, str]] = field(default_factory=list)
    semantic: str = ""
    class_pixels: list[int] = field(default_factory=list)
    ignore_pixels: int = 0

    def reject(self, defect: str, detail: str, file: str) -> Verdict:
        self.defect, self.detail, self.file = defect, detail, file
        return self


def _ingest_issue(row: dict) -> tuple[str, str]:
    reason, _, detail = row["issue"].partition(": ")
    return reason, detail


def _object_rows(row: dict) -> tuple[list[tuple[str, str, str]], tuple[str, str] | None]:
    """Report rows for the objects of a sample (left out, clipped, overlapping) and its first object defect."""
    table = [] if row.get("instances") is None else row["instances"]
    rows, defect = [], None
    for number, entry in enumerate(table, start=1):
        if entry["problem"] and not entry["problem"].startswith("missing_image"):
            reason, _, detail = entry["problem"].partition(": ")
            rows.append((reason, f"object {number} of {row['source']}: {detail}; not painted", row["source"]))
            defect = defect or (reason, f"object {number} of {row['source']}: {detail}")
        elif entry["clipped"]:
            rows.append(("clipped_polygon", f"object {number} of {row['source']} reaches outside the image",
                         row["source"]))
    hidden = [e["area"] - e["pixels"] for e in table if e["id"]]
    if sum(hidden):
        rows.append(("overlap", f"{sum(1 for h in hidden if h)} objects of {row['source']} lost {sum(hidden)} pixels "
                                f"to overlapping objects", row["source"]))
    return rows, defect


def _check(row: dict, categories: Categories, policy: CleanParams, repaired_dir: Path) -> Verdict:
    set_pixel_limit(policy.max_pixels)  # in this worker process: larger images are refused from their header
    verdict = Verdict(row["sample_id"], semantic=row["semantic"])
    object_rows, object_defect = _object_rows(row)
    if object_defect and policy.on_object_defect != "drop_object":
        return verdict.reject(*object_defect, row["source"])
    verdict.repairs.extend(object_rows)
    if row["issue"]:
        reason, detail = _ingest_issue(row)
        if reason not in TO_IGNORE or policy.on_label_out_of_range != "to_ignore":
            return verdict.reject(reason, detail, row["semantic"] or row["image"] or row["source"])
        verdict.repairs.append((reason, detail + "; set to ignore", row["semantic"]))
    try:
        decoded = load_image(row["image"])
    except TooLarge as exc:
        return verdict.reject("too_large", str(exc), row["image"])
    except DecodeError as exc:
        return verdict.reject("corrupt_image", str(exc), row["image"])
    for note in decoded.repairs:
        verdict.repairs.append(("exif_oriented" if "EXIF" in note else "converted", note, row["image"]))
    try:
        labels = load_label(row["semantic"]).astype(np.int64)
    except TooLarge as exc:
        return verdict.reject("too_large", str(exc), row["semantic"])
    except DecodeError as exc:
        return verdict.reject("corrupt_mask", str(exc), row["semantic"])
    height, width = decoded.pixels.shape[:2]
    if row["instance"]:
        try:
            instance_shape = load_label(row["instance"]).shape
        except DecodeError as exc:
            return verdict.reject("corrupt_mask", str(exc), row["instance"])
        if instance_shape != (height, width):
            detail = f"instance mask is {instance_shape[1]}x{instance_shape[0]}, image is {width}x{height}"
            return verdict.reject("size_mismatch", detail, row["instance"])
    changed = False
    if labels.shape != (height, width):
        detail = f"mask is {labels.shape[1]}x{labels.shape[0]}, image is {width}x{height} (width x height)"
        if any("EXIF" in n for n in decoded.repairs) and labels.shape == (width, height):
            detail += "; the mask matches the image before EXIF rotation: re-export it on the oriented image"
        if policy.on_size_mismatch != "resize_mask":
            return verdict.reject("size_mismatch", detail, row["semantic"])
        labels = np.asarray(Image.fromarray(labels.astype(np.int32)).resize((width, height), Image.NEAREST))
        verdict.repairs.append(("size_mismatch", detail + "; mask resized with nearest", row["semantic"]))
        changed = True
    valid = np.isin(labels, categories.ids + [categories.ignore_index])
    if not valid.all():
        bad = sorted(int(v) for v in np.unique(labels[~valid]))
        allowed = f"classes 0..{categories.num_classes - 1} or ignore {categories.ignore_index}"
        detail = f"label values {bad[:10]} are not {allowed}"
        if policy.on_label_out_of_range != "to_ignore":
            return verdict.reject("label_out_of_range", detail, row["semantic"])
        labels[~valid] = categories.ignore_index
        verdict.repairs.append(("label_out_of_range", detail + "; set to ignore", row["semantic"]))
        changed = True
    if (labels == categories.ignore_index).all() and policy.on_all_ignore != "keep":
        return verdict.reject("all_ignore", "every pixel is ignore", row["semantic"])
    if changed:
        verdict.semantic = str(repaired_dir / f"{row['sample_id']}.png")
        save_label(labels, verdict.semantic)
    ignored = labels == categories.ignore_index
    counts = np.bincount(labels[~ignored].ravel(), minlength=categories.num_classes)
    verdict.class_pixels = counts[: categories.num_classes].tolist()
    verdict.ignore_pixels = int(ignored.sum())
    return verdict


def _mark_duplicates(manifest: pd.DataFrame, verdicts: list[Verdict]) -> None:
    first_by_hash: dict[str, str] = {}
    for row, verdict in zip(manifest.itertuples(), verdicts, strict=True):
        if verdict.defect or not row.sha256:
            continue
        if row.sha256 in first_by_hash:
            verdict.defect, verdict.file = "duplicate", row.image
            verdict.detail = f"same bytes as sample {first_by_hash[row.sha256]}"
        else:
            first_by_hash[row.sha256] = row.sample_id


def _raise_on_fail(verdicts: list[Verdict], policy: CleanParams) -> None:
    for verdict in verdicts:
        if verdict.defect and getattr(policy, POLICY[verdict.defect]) == "fail":
            raise SegpipeError(
                f"{verdict.file}: {verdict.defect} ({verdict.detail}); fix: {FIXES[verdict.defect]} "
                f"(or set clean.{POLICY[verdict.defect]}: drop)"
            )


@dataclass
class CleanResult:
    manifest: pd.DataFrame
    rejects: pd.DataFrame
    summary: dict

    def raise_if_empty(self) -> None:
        """Fail when no sample survived, naming the most common reason (call after writing the reports)."""
        if not self.manifest.empty:
            return
        by_reason = sorted(self.summary["dropped_by_reason"].items(), key=lambda kv: -kv[1])
        reasons = ", ".join(f"{count} {reason}" for reason, count in by_reason)
        raise SegpipeError(f"no valid sample left after cleaning: {self.summary['dropped']} of "
                           f"{self.summary['checked']} dropped: {reasons}; see reports/clean_rejects.csv for each "
                           f"file and its fix")


def _report_rows(verdicts: list[Verdict]) -> pd.DataFrame:
    rows = []
    for verdict in verdicts:
        for reason, detail, file in verdict.repairs:
            action = "object_dropped" if reason in OBJECT_DROPS else "repaired"
            rows.append([verdict.sample_id, reason, action, detail, file, FIXES[reason]])
        if verdict.defect:
            rows.append([verdict.sample_id, verdict.defect, "dropped", verdict.detail, verdict.file,
                         FIXES[verdict.defect]])
    return pd.DataFrame(rows, columns=REJECT_COLUMNS)


def _coverage(kept: list[Verdict], source_values: list, categories: Categories, threshold: float) -> dict:
    """Pixels per class and of ignore over the kept samples, with warnings for what would pass silently."""
    pixels = np.array([v.class_pixels for v in kept], dtype=np.int64).reshape(-1, categories.num_classes).sum(0)
    ignored = sum(v.ignore_pixels for v in kept)
    warnings = []
    if kept:
        warnings = empty_class_warnings(pixels, categories, "kept samples")
        warnings += ignore_warnings(pixels, ignored, threshold, "kept samples")
    hint = binary_mask_hint(source_values, pixels, categories)
    if hint:
        warnings.append(hint)
    return {
        "class_pixels": dict(zip(categories.names, pixels.tolist(), strict=True)),
        "ignore_share": round(ignore_share(pixels, ignored), 5),
        "classes_without_pixels": [categories.names[i] for i in np.flatnonzero(pixels == 0)],
        "warnings": warnings,
    }


def clean(manifest: pd.DataFrame, categories: Categories, policy: CleanParams, out_dir: Path,
          workers: int = 0) -> CleanResult:
    """Check every sample of ``manifest``; repaired masks are written under ``out_dir/semantic``.

    The result may hold no sample at all: write its reports, then call :meth:`CleanResult.raise_if_empty`.
    """
    if manifest.empty:
        raise SegpipeError("the ingested dataset is empty; check ingest.source and the folder names in params.yaml")
    repaired_dir = out_dir / SEMANTIC_DIR
    repaired_dir.mkdir(parents=True, exist_ok=True)
    check = partial(_check, categories=categories, policy=policy, repaired_dir=repaired_dir)
    verdicts = parallel_map(check, manifest.to_dict("records"), workers=workers, desc="clean")
    if policy.on_duplicate != "keep":
        _mark_duplicates(manifest, verdicts)
    _raise_on_fail(verdicts, policy)

    rejects = _report_rows(verdicts)
    keep = [not v.defect for v in verdicts]
    kept_verdicts = [v for v in verdicts if not v.defect]
    kept = manifest[keep].copy()
    kept["semantic"] = [v.semantic for v in kept_verdicts]
    kept["class_pixels"] = [v.class_pixels for v in kept_verdicts]
    kept["ignore_pixels"] = [v.ignore_pixels for v in kept_verdicts]
    source_values = kept["source_values"].tolist() if "source_values" in kept else []
    kept = kept.drop(columns=["issue", "source_values"], errors="ignore").reset_index(drop=True)
    dropped = rejects[rejects.action == "dropped"]
    summary = {
        "checked": len(manifest), "kept": len(kept), "dropped": len(dropped),
        "repaired": int(rejects[rejects.action == "repaired"].sample_id.nunique()),
        "dropped_by_reason": dropped.reason.value_counts().sort_index().to_dict(),
        "repaired_by_reason": rejects[rejects.action == "repaired"].reason.value_counts().sort_index().to_dict(),
        "objects_dropped_by_reason":
            rejects[rejects.action == "object_dropped"].reason.value_counts().sort_index().to_dict(),
        **_coverage(kept_verdicts, source_values, categories, policy.warn_ignore_share),
    }
    return CleanResult(kept, rejects, summary)
