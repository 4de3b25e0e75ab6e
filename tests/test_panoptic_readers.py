"""COCO panoptic and Cityscapes readers on tiny datasets built on the fly: classes, instances, crowd regions,
void, predefined splits, and clear errors or report rows for bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segpipe.coco_panoptic import id_to_rgb
from segpipe.data.canonical import CATEGORIES_FILE, Categories
from segpipe.data.clean import clean
from segpipe.data.imageio import load_label
from segpipe.data.ingest import ingest
from segpipe.errors import SegpipeError
from segpipe.params import parse_params
from tests.conftest import scene

H, W = 30, 40
# interleaved, non-contiguous ids: things 1 person, 7 car; stuff 2 sky, 21 grass
COCO_CATEGORIES = [{"id": 21, "name": "grass", "isthing": 0, "color": [0, 200, 0]},
                   {"id": 1, "name": "person", "isthing": 1, "color": [220, 20, 60]},
                   {"id": 7, "name": "car", "isthing": 1},
                   {"id": 2, "name": "sky", "isthing": 0, "color": [70, 130, 180]}]


def _ingest(workdir: Path, fmt: str, options: dict):
    params = parse_params({"base": {"workers": 1}, "ingest": {"format": fmt, "source": str(workdir / "src"),
                                                              fmt: options}})
    manifest = ingest(params, workdir / "data/raw")
    return manifest.set_index("sample_id"), Categories.load(workdir / "data/raw" / CATEGORIES_FILE)


def coco_panoptic_source(root: Path, split: str = "") -> None:
    """Two images: sky over grass with two persons, a car and a crowd of persons; the second all sky with a VOID
    band and a segment id the JSON does not list."""
    ids = np.zeros((H, W), np.int64)
    ids[:10] = 70000  # sky
    ids[10:] = 5  # grass
    ids[12:20, 2:8] = 256 * 3  # person A
    ids[12:20, 10:16] = 16777215  # person B (id 0xFFFFFF)
    ids[22:28, 20:36] = 42  # car
    ids[2:8, 30:38] = 99  # a crowd of persons
    second = np.full((H, W), 70000, np.int64)
    second[:, :3] = 0
    second[25:, 30:] = 123  # not in segments_info
    annotations = [
        {"image_id": 11, "file_name": "a.png", "segments_info": [
            {"id": 70000, "category_id": 2, "iscrowd": 0}, {"id": 5, "category_id": 21, "iscrowd": 0},
            {"id": 768, "category_id": 1, "iscrowd": 0}, {"id": 16777215, "category_id": 1, "iscrowd": 0},
            {"id": 42, "category_id": 7, "iscrowd": 0}, {"id": 99, "category_id": 1, "iscrowd": 1}]},
        {"image_id": 12, "file_name": "b.png", "segments_info": [{"id": 70000, "category_id": 2, "iscrowd": 0}]},
    ]
    folder = root / "annotations" / (f"panoptic_{split}" if split else "panoptic")
    folder.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    for name, array, seed in (("a", ids, 1), ("b", second, 2)):
        Image.fromarray(id_to_rgb(array)).save(folder / f"{name}.png")
        Image.fromarray(scene(W, H, seed=seed)[0]).save(root / "images" / f"{name}.jpg")
    images = [{"id": 11, "file_name": "a.jpg", "width": W, "height": H},
              {"id": 12, "file_name": "b.jpg", "width": W, "height": H}]
    document = {"images": images, "annotations": annotations, "categories": COCO_CATEGORIES}
    (root / "annotations" / (f"panoptic_{split}.json" if split else "panoptic.json")).write_text(json.dumps(document))


def test_coco_panoptic_classes_instances_crowd_and_void(workdir):
    coco_panoptic_source(workdir / "src")
    manifest, categories = _ingest(workdir, "coco_panoptic", {})
    assert [(c.name, c.isthing, c.source_id) for c in categories.items] == [
        ("person", True, 1), ("sky", False, 2), ("car", True, 7), ("grass", False, 21)]
    assert categories.items[0].color == (220, 20, 60)
    semantic, instance = load_label(manifest.at["a", "semantic"]), load_label(manifest.at["a", "instance"])
    assert semantic[0, 0] == 1 and semantic[29, 0] == 3 and semantic[15, 4] == 0 and semantic[25, 25] == 2
    assert len(np.unique(instance[instance > 0])) == 4  # two persons, a car, the crowd
    table = {e["id"]: e for e in manifest.at["a", "instances"]}
    crowd = instance[4, 33]
    assert table[crowd]["iscrowd"] and table[crowd]["category"] == 0
    assert table[instance[15, 4]]["area"] == 48 and not table[instance[15, 4]]["iscrowd"]
    assert instance[0, 0] == 0  # stuff has no instance
    second = load_label(manifest.at["b", "semantic"])
    assert (second[:, :3] == 255).all() and (second[26:, 31:] == 255).all()  # VOID and the unlisted id: ignore
    problems = [e["problem"] for e in manifest.at["b", "instances"]]
    assert any(p.startswith("unlisted_segment: segment id 123") for p in problems)


def test_coco_panoptic_unlisted_segment_is_reported_by_clean(workdir):
    coco_panoptic_source(workdir / "src")
    manifest, categories = _ingest(workdir, "coco_panoptic", {})
    result = clean(manifest.reset_index(), categories, parse_params({}).clean, workdir / "data/clean", workers=1)
    rows = result.rejects
    assert rows[rows.reason == "unlisted_segment"].sample_id.tolist() == ["b"]
    assert set(result.manifest.sample_id) == {"a", "b"}


def test_coco_panoptic_predefined_splits(workdir):
    for split in ("train", "val"):
        coco_panoptic_source(workdir / "src", split)
    splits = {s: {"annotations": f"annotations/panoptic_{s}.json", "masks": f"annotations/panoptic_{s}",
                  "images": "images"} for s in ("train", "val")}
    manifest, _ = _ingest(workdir, "coco_panoptic", {"splits": splits})
    assert sorted(manifest.index) == ["train_a", "train_b", "val_a", "val_b"]
    assert manifest.source_split.to_dict()["val_a"] == "val"


@pytest.mark.parametrize("break_it, message", [
    (lambda p: p.write_text("{not json"), "not valid JSON"),
    (lambda p: p.write_text(json.dumps({"annotations": [{"image_id": 1}]})), r"annotations\[0\] needs image_id"),
    (lambda p: p.write_text(json.dumps({"annotations": [], "categories": [{"id": 1}]})), "needs id, name and isthing"),
])
def test_malformed_coco_panoptic_json_is_one_line(workdir, break_it, message):
    coco_panoptic_source(workdir / "src")
    break_it(workdir / "src/annotations/panoptic.json")
    with pytest.raises(SegpipeError, match=message):
        _ingest(workdir, "coco_panoptic", {})


def test_coco_panoptic_missing_png_and_wrong_size_are_report_rows(workdir):
    coco_panoptic_source(workdir / "src")
    (workdir / "src/annotations/panoptic/b.png").unlink()
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(workdir / "src/annotations/panoptic/a.png")
    manifest, _ = _ingest(workdir, "coco_panoptic", {})
    assert manifest.at["b", "issue"].startswith("corrupt_mask") and "not found" in manifest.at["b", "issue"]
    assert manifest.at["a", "issue"].startswith("size_mismatch: annotations/panoptic/a.png is 10x10")


def cityscapes_source(root: Path) -> None:
    """aachen (train) and frankfurt (val): road, sky, two cars, a person, a group of cars (crowd), a caravan
    (not evaluated: ignore) and an ego-vehicle region (ignore)."""
    for split, city, number in (("train", "aachen", 0), ("val", "frankfurt", 1)):
        name = f"{city}_000000_00001{number}"
        labels = np.full((H, W), 7, np.uint8)  # road
        labels[:8] = 23  # sky
        labels[28:] = 1  # ego vehicle
        instances = labels.astype(np.int32).copy()
        for k, (y, x) in enumerate(((10, 2), (10, 12))):
            labels[y:y + 6, x:x + 8] = 26
            instances[y:y + 6, x:x + 8] = 26 * 1000 + k
        labels[18:24, 2:6], instances[18:24, 2:6] = 24, 24000  # a person
        labels[18:24, 20:30], instances[18:24, 20:30] = 26, 26  # a group of cars: no instance id
        labels[10:16, 30:38], instances[10:16, 30:38] = 29, 29000  # caravan
        image_dir, gt_dir = root / "leftImg8bit" / split / city, root / "gtFine" / split / city
        image_dir.mkdir(parents=True)
        gt_dir.mkdir(parents=True)
        Image.fromarray(scene(W, H, seed=number)[0]).save(image_dir / f"{name}_leftImg8bit.png")
        Image.fromarray(labels, mode="L").save(gt_dir / f"{name}_gtFine_labelIds.png")
        Image.fromarray(instances.astype(np.uint16)).save(gt_dir / f"{name}_gtFine_instanceIds.png")


def test_cityscapes_label_table_instances_groups_and_splits(workdir):
    cityscapes_source(workdir / "src")
    manifest, categories = _ingest(workdir, "cityscapes", {})
    assert categories.num_classes == 19 and sum(c.isthing for c in categories.items) == 8
    assert categories.names[:2] == ["road", "sidewalk"] and categories.names[13] == "car"
    assert sorted(manifest.source_split) == ["train", "val"]
    row = manifest.loc["train_aachen_000000_000010"]
    semantic, instance = load_label(row.semantic), load_label(row.instance)
    assert semantic[0, 0] == 10 and semantic[26, 0] == 0 and semantic[12, 4] == 13 and semantic[20, 3] == 11
    assert semantic[29, 0] == 255 and semantic[12, 33] == 255  # ego vehicle and caravan: ignore
    table = {e["id"]: e for e in row.instances}
    assert len(table) == 4 and instance[12, 4] != instance[12, 14]
    assert table[instance[20, 25]]["iscrowd"] and table[instance[20, 25]]["category"] == 13
    assert not table[instance[20, 3]]["iscrowd"] and table[instance[20, 3]]["category"] == 11
    assert instance[12, 33] == 0


def test_cityscapes_missing_labels_and_empty_folder(workdir):
    cityscapes_source(workdir / "src")
    next((workdir / "src/gtFine/val").rglob("*_instanceIds.png")).unlink()
    manifest, _ = _ingest(workdir, "cityscapes", {})
    assert manifest.loc["val_frankfurt_000000_000011"].issue.startswith("missing_mask")
    with pytest.raises(SegpipeError, match="no leftImg8bit/<test>"):
        _ingest(workdir, "cityscapes", {"splits": ["test"]})
