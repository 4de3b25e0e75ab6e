"""Reader for Ultralytics YOLO-seg datasets: one text file per image, a line per object
(``class x1 y1 x2 y2 ...``, coordinates normalised by the image width and height)."""

from __future__ import annotations

from pathlib import Path

import yaml

from segpipe.data.canonical import Categories, Category
from segpipe.data.instances import BACKGROUND, AnnotatedSample, Annotation
from segpipe.data.mask_folder import IMAGE_SUFFIXES, files_by_stem
from segpipe.data.palette import class_color
from segpipe.errors import SegpipeError
from segpipe.params import YoloSegParams

NORMALIZED_REACH = 1.5  # normalised polygons may reach a little past the image border (clipped), never this far


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


def parse_labels(path: Path, num_classes: int) -> list[Annotation]:
    """The objects of one label file (polygons in 0..1 image coordinates); a malformed line is an error naming it."""
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
        category = cls + 1 if 0 <= cls < num_classes else None
        annotations.append(Annotation(category, [coords], False, cls, _pixel_units(coords, path, number)))
    return annotations


def _pixel_units(coords: list[float], path: Path, number: int) -> str:
    """Why a polygon looks like pixels rather than YOLO's fractions of the image size ('' when it does not)."""
    if coords and max(abs(v) for v in coords) > NORMALIZED_REACH:
        return (f"pixel_coordinates: {path.name}:{number} has coordinates up to {max(abs(v) for v in coords):g}, "
                f"but YOLO-seg coordinates are fractions of the image size (0..1); divide x by the image width and "
                f"y by its height")
    return ""


def _label_dir(images: str, labels: str | None) -> str:
    if labels:
        return labels
    parts = Path(images).parts
    if "images" not in parts:
        raise SegpipeError(f"ingest.yolo_seg: cannot find the labels of '{images}' (no 'images' in the path to "
                           f"replace with 'labels'); set ingest.yolo_seg.labels")
    index = len(parts) - 1 - parts[::-1].index("images")
    return Path(*parts[:index], "labels", *parts[index + 1:]).as_posix()


def _sample(root: Path, image: Path, label: Path, split: str, num_classes: int) -> AnnotatedSample:
    """One image and its label file; an image without a label file has no objects (a negative), and a label file
    without its image becomes a sample that clean reports (its objects counted, not painted)."""
    sample_id = f"{split}_{image.stem}" if split else image.stem
    objects = tuple(parse_labels(label, num_classes)) if label.is_file() else ()
    return AnnotatedSample(sample_id, root, image.relative_to(root).as_posix(), objects, split, normalized=True)


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
        images = files_by_stem(folder, IMAGE_SUFFIXES, kind="image")  # a label file is found by its image's stem
        orphans = sorted(p.stem for p in labels.glob("*.txt") if p.stem not in images) if labels.is_dir() else []
        images.update({stem: folder / f"{stem}.jpg" for stem in orphans})
        samples += [_sample(root, image, labels / f"{stem}.txt", split, categories.num_classes - 1)
                    for stem, image in images.items()]
    if not samples:
        raise SegpipeError(f"{root}: no images found; check ingest.yolo_seg.images")
    return categories, samples
