"""Reader for Ultralytics YOLO-seg datasets: one text file per image, a line per object
(``class x1 y1 x2 y2 ...``, coordinates normalised by the image width and height)."""

from __future__ import annotations

from pathlib import Path

import yaml

from segpipe.config import YoloSegParams
from segpipe.data.canonical import Categories, Category
from segpipe.data.imageio import DecodeError, oriented_size
from segpipe.data.instances import BACKGROUND, AnnotatedSample, Annotation
from segpipe.data.mask_folder import IMAGE_SUFFIXES
from segpipe.data.palette import class_color
from segpipe.errors import SegpipeError


def class_names(root: Path, params: YoloSegParams) -> list[str]:
    """Class names in YOLO index order, from params or from the data.yaml they point at."""
    if params.names:
        return list(params.names)
    if not params.data_yaml:
        raise SegpipeError("format 'yolo_seg' needs ingest.yolo_seg.names (class names in index order) or "
                           "ingest.yolo_seg.data_yaml (an Ultralytics data.yaml holding them)")
    path = root / params.data_yaml
    if not path.is_file():
        raise SegpipeError(f"{path}: not found; check ingest.yolo_seg.data_yaml")
    try:
        names = (yaml.safe_load(path.read_text()) or {}).get("names")
    except (yaml.YAMLError, AttributeError):
        names = None
    if isinstance(names, dict) and sorted(names) == list(range(len(names))):
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise SegpipeError(f"{path}: 'names' must be a list of class names (or a mapping 0..n-1 to names)")
    return names


def categories_for(names: list[str]) -> Categories:
    """Background as class 0, then the YOLO classes as 1..n (their YOLO index kept as source_id)."""
    items = [Category(BACKGROUND, "background", (0, 0, 0), False)]
    items += [Category(i + 1, name, class_color(i + 1), True, i) for i, name in enumerate(names)]
    return Categories(tuple(items), Categories.ignore_for(len(items)))


def parse_labels(path: Path, width: int, height: int, num_classes: int) -> list[Annotation]:
    """The objects of one label file as absolute-pixel polygons; a malformed line is an error naming it."""
    annotations = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            cls, coords = int(fields[0]), [float(v) for v in fields[1:]]
        except ValueError:
            raise SegpipeError(f"{path}:{number}: expected 'class x1 y1 x2 y2 ...' with numbers, got "
                               f"'{line[:60]}'") from None
        if len(coords) % 2:
            raise SegpipeError(f"{path}:{number}: an odd number of coordinates ({len(coords)}); each point is x y")
        polygon = [v * (width if i % 2 == 0 else height) for i, v in enumerate(coords)]
        category = cls + 1 if 0 <= cls < num_classes else None
        annotations.append(Annotation(category, [polygon], False, cls))
    return annotations


def _label_dir(images: str, labels: str | None) -> str:
    if labels:
        return labels
    parts = Path(images).parts
    if "images" not in parts:
        raise SegpipeError(f"ingest.yolo_seg: cannot find the labels of '{images}' (no 'images' in the path to "
                           f"replace with 'labels'); set ingest.yolo_seg.labels")
    index = len(parts) - 1 - parts[::-1].index("images")
    return Path(*parts[:index], "labels", *parts[index + 1:]).as_posix()


def _sample(root: Path, image: Path, label_dir: Path, split: str, num_classes: int) -> AnnotatedSample:
    sample_id = f"{split}_{image.stem}" if split else image.stem
    relative = image.relative_to(root).as_posix()
    label = label_dir / f"{image.stem}.txt"
    if not label.is_file():  # an image without a label file has no objects: a negative
        return AnnotatedSample(sample_id, root, relative, (), split)
    try:
        width, height = oriented_size(image)
    except DecodeError:
        return AnnotatedSample(sample_id, root, relative, (), split)  # clean reports the corrupt image
    return AnnotatedSample(sample_id, root, relative, tuple(parse_labels(label, width, height, num_classes)), split)


def _orphans(root: Path, label_dir: Path, stems: set[str], folder: Path, split: str,
             num_classes: int) -> list[AnnotatedSample]:
    """Label files whose image is missing: samples that clean reports (their objects counted, not painted)."""
    orphans = []
    for label in sorted(label_dir.glob("*.txt")) if label_dir.is_dir() else []:
        if label.stem not in stems:
            sample_id = f"{split}_{label.stem}" if split else label.stem
            image = (folder / f"{label.stem}.jpg").relative_to(root).as_posix()
            orphans.append(AnnotatedSample(sample_id, root, image, tuple(parse_labels(label, 1, 1, num_classes)),
                                           split))
    return orphans


def plan(root: Path, params: YoloSegParams) -> tuple[Categories, list[AnnotatedSample]]:
    """Every image of a YOLO-seg dataset with its objects (images without a label file are negatives)."""
    categories = categories_for(class_names(root, params))
    groups = {"": (params.images, params.labels)}
    if params.splits:
        groups = {name: (folders.images, folders.labels) for name, folders in params.splits.items()}
    samples = []
    for split, (image_dir, label_dir) in groups.items():
        folder = root / image_dir
        if not folder.is_dir():
            raise SegpipeError(f"{folder}: folder not found; check ingest.yolo_seg (images / splits)")
        labels = root / _label_dir(image_dir, label_dir)
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for image in images:
            samples.append(_sample(root, image, labels, split, categories.num_classes - 1))
        samples += _orphans(root, labels, {p.stem for p in images}, folder, split, categories.num_classes - 1)
    if not samples:
        raise SegpipeError(f"{root}: no images found; check ingest.yolo_seg.images")
    return categories, samples
