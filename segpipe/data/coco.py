"""Reader for COCO instance annotations: one JSON file per split, polygons or RLE, iscrowd kept as crowd."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from segpipe.data.canonical import Categories, Category
from segpipe.data.instances import BACKGROUND, AnnotatedSample, Annotation
from segpipe.data.palette import class_color
from segpipe.data.sample_ids import unique_ids
from segpipe.errors import SegpipeError
from segpipe.params import CocoParams


def _field(record: dict, name: str, where: str, path: Path, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(record, dict) or name not in record:
        raise SegpipeError(f"{path}: {where} has no field '{name}'; is this a COCO instances file?")
    value = record[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise SegpipeError(f"{path}: {where}.{name} is {type(value).__name__}, expected {_kind_name(kind)}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def load_json(path: Path) -> dict:
    """Parse a COCO JSON file; a missing or malformed file is one line naming it and where it breaks."""
    if not path.is_file():
        raise SegpipeError(f"{path}: annotation file not found; check ingest.coco (annotations / splits)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SegpipeError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except UnicodeDecodeError:
        raise SegpipeError(f"{path}: not a text file; expected COCO JSON") from None
    if not isinstance(data, dict):
        raise SegpipeError(f"{path}: expected a JSON object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        _field(data, key, "the file", path, list)
    return data


def categories_from(data: dict, path: Path) -> Categories:
    """Background as class 0, then the COCO categories in id order as 1..n (their ids kept as source_id)."""
    items = [Category(BACKGROUND, "background", (0, 0, 0), False)]
    seen: set[int] = set()
    for index, record in enumerate(sorted(data["categories"], key=lambda c: c.get("id", 0)
                                          if isinstance(c, dict) else 0)):
        source_id = _field(record, "id", f"categories[{index}]", path, int)
        name = _field(record, "name", f"categories[{index}]", path, str)
        if source_id in seen:
            raise SegpipeError(f"{path}: categories: id {source_id} appears twice")
        seen.add(source_id)
        items.append(Category(len(items), name, class_color(len(items)), True, source_id))
    return Categories(tuple(items), Categories.ignore_for(len(items)))


def _annotations_by_image(data: dict, path: Path, class_of: dict[int, int]) -> dict[int, list[Annotation]]:
    image_ids = {record.get("id") for record in data["images"] if isinstance(record, dict)}
    by_image: dict[int, list[Annotation]] = {}
    for index, record in enumerate(data["annotations"]):
        where = f"annotations[{index}]" + (f" (id {record['id']})" if isinstance(record, dict) and "id" in record
                                          else "")
        image_id = _field(record, "image_id", where, path, int)
        if image_id not in image_ids:
            raise SegpipeError(f"{path}: {where}.image_id {image_id} is not the id of any image")
        category = _field(record, "category_id", where, path, int)
        segmentation = _field(record, "segmentation", where, path, (list, dict))
        iscrowd = bool(record.get("iscrowd", 0))
        by_image.setdefault(image_id, []).append(Annotation(class_of.get(category), segmentation, iscrowd, category))
    return by_image


def plan_file(root: Path, annotation_file: str, image_dir: str, split: str,
              categories: Categories | None = None) -> tuple[Categories, list[AnnotatedSample]]:
    """Samples of one COCO JSON file; images without annotations are kept (as negatives)."""
    path = root / annotation_file
    data = load_json(path)
    found = categories_from(data, path)
    if categories is not None and [c.source_id for c in found.items] != [c.source_id for c in categories.items]:
        raise SegpipeError(f"{path}: its categories differ from the first annotation file's; every split needs the "
                           f"same category list")
    class_of = {c.source_id: c.id for c in found.items if c.source_id is not None}
    by_image = _annotations_by_image(data, path, class_of)
    records = []
    for index, record in enumerate(data["images"]):
        where = f"images[{index}]"
        image_id = _field(record, "id", where, path, int)
        file_name = _field(record, "file_name", where, path, str)
        size = (_field(record, "width", where, path, int), _field(record, "height", where, path, int))
        records.append((image_id, file_name, size))
    ids = unique_ids([file_name for _, file_name, _ in records], f"an image of {path}")
    samples = [AnnotatedSample(f"{split}_{sample_id}" if split else sample_id, root,
                               (Path(image_dir) / file_name).as_posix(), tuple(by_image.get(image_id, [])), split, size)
               for sample_id, (image_id, file_name, size) in zip(ids, records, strict=True)]
    return found, samples


def plan(root: Path, params: CocoParams) -> tuple[Categories, list[AnnotatedSample]]:
    """Every sample of a COCO dataset: one annotation file, or one per predefined split."""
    groups = {"": (params.annotations, params.images)}
    if params.splits:
        groups = {name: (folders.annotations, folders.images) for name, folders in params.splits.items()}
    categories, samples = None, []
    for split, (annotation_file, image_dir) in groups.items():
        categories, found = plan_file(root, annotation_file, image_dir, split, categories)
        samples += found
    if not samples:
        raise SegpipeError(f"{root}: the COCO annotations list no images; check ingest.coco")
    return categories, samples
