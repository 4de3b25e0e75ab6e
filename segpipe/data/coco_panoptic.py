"""Reader for COCO panoptic annotations: a JSON file (images, annotations with segments_info, categories with
isthing; ids need not be contiguous) plus one RGB PNG of segment ids per image (id = R + 256 G + 256^2 B)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from segpipe.coco_panoptic import load_panoptic_json, read_ids
from segpipe.data.canonical import Categories, Category, copy_image, new_row
from segpipe.data.palette import class_color
from segpipe.data.panoptic_maps import SegmentLabel, paint_segments, write_maps
from segpipe.data.sample_ids import unique_ids
from segpipe.errors import SegpipeError
from segpipe.params import CocoPanopticParams


@dataclass(frozen=True)
class PanopticSample:
    """One image with its segment-id PNG and the labels of its segments (paths relative to ``root``)."""

    sample_id: str
    root: Path
    image: str
    png: str
    labels: tuple[SegmentLabel, ...]
    source_split: str
    ignore_index: int

    def materialize(self, out_dir: Path) -> dict:
        row = new_row(self.sample_id, self.source_split, self.png)
        if not (self.root / self.image).is_file():
            row["issue"] = f"missing_image: {self.image} is annotated but not there"
            return row
        if not copy_image(self.root / self.image, out_dir, row):
            return row
        try:
            ids = read_ids(self.root / self.png)
        except SegpipeError as exc:
            row["issue"] = f"corrupt_mask: {str(exc).replace(str(self.root) + '/', '')}"
            return row
        if ids.shape != (row["height"], row["width"]):
            row["issue"] = (f"size_mismatch: {self.png} is {ids.shape[1]}x{ids.shape[0]}, the image "
                            f"{row['width']}x{row['height']} (width x height)")
            return row
        semantic, instance, table = paint_segments(ids, list(self.labels), self.ignore_index)
        row.update(write_maps(semantic, instance, out_dir, self.sample_id))
        row["instances"] = table
        return row


def categories_from(records: list, path: Path) -> Categories:
    """The categories in source-id order as classes 0..n-1 (ids kept as source_id, colours kept when given)."""
    items = []
    try:
        for index, record in enumerate(sorted(records, key=lambda c: int(c["id"]))):
            color = tuple(record["color"]) if len(record.get("color") or ()) == 3 else class_color(index + 1)
            items.append(Category(index, str(record["name"]), color, bool(record["isthing"]), int(record["id"])))
    except (KeyError, TypeError, ValueError):
        raise SegpipeError(f"{path}: every category needs id, name and isthing") from None
    if not items:
        raise SegpipeError(f"{path}: the categories list is empty")
    return Categories(tuple(items), Categories.ignore_for(len(items)))


def plan_file(root: Path, annotation_file: str, masks: str, images: str, split: str,
              categories: Categories | None) -> tuple[Categories, list[PanopticSample]]:
    path = root / annotation_file
    data = load_panoptic_json(path)
    found = categories_from(data.get("categories") or [], path)
    if categories is not None and [c.source_id for c in found.items] != [c.source_id for c in categories.items]:
        raise SegpipeError(f"{path}: its categories differ from the first annotation file's; every split needs the "
                           f"same category list")
    by_source = {c.source_id: c for c in found.items}
    image_files = {record.get("id"): record.get("file_name") for record in data.get("images") or []
                   if isinstance(record, dict)}
    samples = []
    ids = iter(unique_ids([a["file_name"] for a in data["annotations"]], f"a segment PNG of {path}"))
    for annotation in data["annotations"]:
        png = annotation["file_name"]
        image_name = image_files.get(annotation["image_id"]) or f"{Path(png).stem}.jpg"
        labels = []
        for segment in annotation["segments_info"]:
            category = by_source.get(segment["category_id"])
            problem = "" if category else (f"unknown_category: category id {segment['category_id']} is not in the "
                                           f"category list")
            labels.append(SegmentLabel(int(segment["id"]), category.id if category else None,
                                       bool(category and category.isthing), bool(segment.get("iscrowd", 0)),
                                       segment["category_id"], problem))
        sample_id = next(ids)
        samples.append(PanopticSample(f"{split}_{sample_id}" if split else sample_id, root,
                                      (Path(images) / image_name).as_posix(), (Path(masks) / png).as_posix(),
                                      tuple(labels), split, found.ignore_index))
    return found, samples


def plan(root: Path, params: CocoPanopticParams) -> tuple[Categories, list[PanopticSample]]:
    """Every sample of a COCO panoptic dataset: one annotation file, or one per predefined split."""
    groups = {"": (params.annotations, params.masks, params.images)}
    if params.splits:
        groups = {name: (s.annotations, s.masks, s.images) for name, s in params.splits.items()}
    categories, samples = None, []
    for split, (annotation_file, masks, images) in groups.items():
        categories, found = plan_file(root, annotation_file, masks, images, split, categories)
        samples += found
    if not samples:
        raise SegpipeError(f"{root}: the COCO panoptic annotations list no images; check ingest.coco_panoptic")
    return categories, samples
