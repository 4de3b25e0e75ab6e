"""COCO, YOLO-seg and PASCAL VOC readers on tiny datasets built on the fly, and COCO128-seg for real."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from pycocotools import mask as mask_utils

from segpipe.data.canonical import CATEGORIES_FILE, Categories
from segpipe.data.clean import clean
from segpipe.data.imageio import load_label
from segpipe.data.ingest import ingest
from segpipe.data.split import split
from segpipe.data.voc import VOC_CLASSES
from segpipe.errors import SegpipeError
from segpipe.params import parse_params
from tests.conftest import scene


def _ingest(workdir: Path, fmt: str, options: dict):
    params = parse_params({"base": {"workers": 1}, "ingest": {"format": fmt, "source": str(workdir / "src"),
                                                              fmt: options}})
    manifest = ingest(params, workdir / "data/raw")
    return manifest.set_index("sample_id"), Categories.load(workdir / "data/raw" / CATEGORIES_FILE)


def _image(root: Path, name: str, width: int = 40, height: int = 30) -> None:
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    seed = sum(name.encode())  # different pictures, so that clean sees no duplicates
    Image.fromarray(scene(width, height, seed=seed)[0]).save(root / name)


# --- COCO ---------------------------------------------------------------------------------------------------

SQUARE = [[5, 5, 15, 5, 15, 15, 5, 15]]  # a 10x10 square polygon


def _coco(src: Path) -> dict:
    """Three images: polygons; compressed + uncompressed RLE and a crowd; none (a negative). Category ids 3, 7, 90."""
    for name in ("a.png", "b.png", "c.png"):
        _image(src / "images", name)
    box = np.zeros((30, 40), np.uint8, order="F")
    box[20:28, 25:38] = 1
    compressed = mask_utils.encode(box)
    compressed["counts"] = compressed["counts"].decode("ascii")
    uncompressed = {"size": [30, 40], "counts": [int(20 * 30 + 0), 30 * 2, 30 * 40 - 20 * 30 - 60]}
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30},
                   {"id": 2, "file_name": "b.png", "width": 40, "height": 30},
                   {"id": 3, "file_name": "c.png", "width": 40, "height": 30}],
        "categories": [{"id": 90, "name": "toothbrush"}, {"id": 3, "name": "car"}, {"id": 7, "name": "train"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 3, "segmentation": SQUARE, "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 90, "segmentation": [[8, 8, 12, 8, 12, 12, 8, 12]], "iscrowd": 0},
            {"id": 12, "image_id": 2, "category_id": 7, "segmentation": compressed, "iscrowd": 0},
            {"id": 13, "image_id": 2, "category_id": 3, "segmentation": uncompressed, "iscrowd": 1},
        ],
    }
    (src / "annotations").mkdir(parents=True, exist_ok=True)
    (src / "annotations/instances.json").write_text(json.dumps(data))
    return data


def test_coco_polygons_rle_crowd_negatives_and_category_ids(workdir):
    _coco(workdir / "src")
    manifest, categories = _ingest(workdir, "coco", {})
    assert categories.names == ["background", "car", "train", "toothbrush"]
    assert [c.source_id for c in categories.items] == [None, 3, 7, 90]
    semantic, instance = load_label(manifest.semantic["a"]), load_label(manifest.instance["a"])
    assert (semantic[9:11, 9:11] == 3).all() and (semantic[6, 6] == 1) and semantic[0, 0] == 0
    assert len(np.unique(instance)) == 3  # background + two objects; the small one on top of the large one
    table = {e["source_category"]: e for e in manifest.instances["a"]}
    assert table[3]["area"] > table[3]["pixels"] > 0  # the square lost the pixels the small object covers
    assert table[90]["area"] == table[90]["pixels"]
    b = {e["source_category"]: e for e in manifest.instances["b"]}
    assert b[3]["iscrowd"] and not b[7]["iscrowd"]
    expected = mask_utils.decode(mask_utils.frPyObjects(_coco(workdir / "src")["annotations"][3]["segmentation"],
                                                        30, 40)).astype(bool)
    assert (load_label(manifest.semantic["b"])[expected] == 1).all()  # uncompressed RLE, painted as car
    assert list(manifest.instances["c"]) == [] and manifest.issue["c"] == ""  # a negative is kept
    assert (load_label(manifest.semantic["c"]) == 0).all()


@pytest.mark.parametrize(("break_it", "message"), [
    (lambda path: path.write_text('{"images": [1, 2,'), r"instances.json: not valid JSON \(line 1, column"),
    (lambda path: path.write_text('{"images": []}'), r"instances.json: the file has no field 'annotations'"),
    (lambda path: _edit(path, lambda d: d["annotations"][2].pop("segmentation")),
     r"annotations\[2\] \(id 12\) has no field 'segmentation'"),
    (lambda path: _edit(path, lambda d: d["annotations"][0].update(image_id=99)),
     r"annotations\[0\] \(id 10\).image_id 99 is not the id of any image"),
    (lambda path: _edit(path, lambda d: d["images"][0].update(width="40")), r"images\[0\].width is str, expected int"),
])
def test_malformed_coco_json_is_one_line_naming_file_and_field(workdir, break_it, message):
    _coco(workdir / "src")
    break_it(workdir / "src/annotations/instances.json")
    with pytest.raises(SegpipeError, match=message) as info:
        _ingest(workdir, "coco", {})
    assert "\n" not in str(info.value)


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_object_defects_are_reported_by_clean_and_the_sample_kept(workdir):
    src = workdir / "src"
    data = _coco(src)
    data["annotations"] += [
        {"id": 20, "image_id": 1, "category_id": 5, "segmentation": SQUARE},  # no such category
        {"id": 21, "image_id": 1, "category_id": 3, "segmentation": [[1, 1, 2, 2]]},  # two points
        {"id": 22, "image_id": 1, "category_id": 3, "segmentation": [[1, 1, 1, 1, 1, 1]]},  # no area
        {"id": 23, "image_id": 3, "category_id": 3, "segmentation": [[30, 20, 50, 20, 50, 40, 30, 40]]},  # outside
    ]
    (src / "annotations/instances.json").write_text(json.dumps(data))
    manifest, categories = _ingest(workdir, "coco", {})
    result = clean(manifest.reset_index(), categories, parse_params({}).clean, workdir / "data/clean", workers=1)
    rows = result.rejects
    assert sorted(rows[rows.action == "object_dropped"].reason) == ["degenerate_polygon", "unknown_category",
                                                                      "zero_area"]
    clipped = rows[rows.reason == "clipped_polygon"]
    assert clipped.sample_id.tolist() == ["c"] and clipped.action.tolist() == ["repaired"]
    assert "category id 5" in rows[rows.reason == "unknown_category"].detail.iloc[0]
    assert set(result.manifest.sample_id) == {"a", "b", "c"}
    assert result.summary["objects_dropped_by_reason"] == {"degenerate_polygon": 1, "unknown_category": 1,
                                                           "zero_area": 1}


# --- YOLO-seg -------------------------------------------------------------------------------------------------

def _yolo(src: Path) -> None:
    for stem in ("x", "y", "z"):
        _image(src / "images/train", f"{stem}.jpg", width=50, height=20)
    (src / "labels/train").mkdir(parents=True)
    (src / "labels/train/x.txt").write_text("1 0.1 0.1 0.5 0.1 0.5 0.9 0.1 0.9\n0 0.6 0.2 0.9 0.2 0.9 0.8\n")
    (src / "labels/train/y.txt").write_text("")  # z has no label file at all: both are negatives
    (src / "labels/train/gone.txt").write_text("0 0.1 0.1 0.5 0.1 0.5 0.5\n")  # its image is missing
    (src / "data.yaml").write_text(yaml.safe_dump({"names": {0: "cat", 1: "dog"}}))


def test_yolo_seg_polygons_names_from_data_yaml_negatives_and_orphans(workdir):
    _yolo(workdir / "src")
    manifest, categories = _ingest(workdir, "yolo_seg", {"images": "images/train", "data_yaml": "data.yaml"})
    assert categories.names == ["background", "cat", "dog"]
    semantic = load_label(manifest.semantic["x"])
    assert semantic[10, 12] == 2 and semantic[8, 40] == 1 and semantic[19, 49] == 0  # dog left, cat right
    assert [e["category"] for e in manifest.instances["x"]] == [2, 1]
    assert list(manifest.instances["y"]) == list(manifest.instances["z"]) == []
    assert manifest.issue["gone"].startswith("missing_image: images/train/gone.jpg")
    assert len(manifest.instances["gone"]) == 1  # counted, and clean reports the sample


def test_yolo_seg_malformed_line_and_missing_names(workdir):
    _yolo(workdir / "src")
    (workdir / "src/labels/train/y.txt").write_text("1 0.1 0.2 0.3\n")
    with pytest.raises(SegpipeError, match=r"labels/train/y.txt:1: an odd number of coordinates"):
        _ingest(workdir, "yolo_seg", {"images": "images/train", "names": ["cat", "dog"]})
    with pytest.raises(SegpipeError, match=r"needs ingest.yolo_seg.names"):
        _ingest(workdir, "yolo_seg", {"images": "images/train"})


def test_coco128_seg_has_128_images_and_941_instances(workdir):
    root = os.environ.get("SEGPIPE_COCO128")
    if root is None:
        pytest.skip("SEGPIPE_COCO128 is not set")
    assert Path(root).is_dir(), f"SEGPIPE_COCO128={root} does not exist"
    names = [f"class{i}" for i in range(80)]
    params = parse_params({"base": {"workers": 2}, "ingest": {
        "format": "yolo_seg", "source": root, "yolo_seg": {"images": "images/train2017", "names": names}}})
    manifest = ingest(params, workdir / "data/raw")
    assert int((manifest.image != "").sum()) == 128
    assert sum(len(table) for table in manifest.instances) == 941
    painted = sum(1 for table in manifest.instances for entry in table if entry["id"])
    assert painted == 929  # the other 12 belong to two label files whose images are missing (clean drops them)
    assert sorted(manifest.sample_id[manifest.issue != ""]) == ["000000000656", "000000000659"]


# --- PASCAL VOC -----------------------------------------------------------------------------------------------

def _palette_png(array: np.ndarray, path: Path) -> None:
    image = Image.fromarray(array.astype(np.uint8), mode="P")
    image.putpalette([v for i in range(256) for v in (i, i, i)])
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def _voc(src: Path) -> None:
    for name, stems in (("train", ["2007_000001", "2007_000002"]), ("val", ["2007_000003"])):
        listing = src / "ImageSets/Segmentation" / f"{name}.txt"
        listing.parent.mkdir(parents=True, exist_ok=True)
        listing.write_text("\n".join(stems) + "\n")
        for stem in stems:
            _image(src / "JPEGImages", f"{stem}.jpg")
            classes = np.zeros((30, 40), np.uint8)
            objects = np.zeros((30, 40), np.uint8)
            classes[5:15, 5:15], objects[5:15, 5:15] = 15, 1  # a person
            classes[18:25, 20:35], objects[18:25, 20:35] = 12, 2  # a dog
            classes[4, :], objects[4, :] = 255, 255  # the border VOC draws around objects
            _palette_png(classes, src / "SegmentationClass" / f"{stem}.png")
            _palette_png(objects, src / "SegmentationObject" / f"{stem}.png")


def test_voc_classes_objects_border_and_predefined_splits(workdir):
    _voc(workdir / "src")
    manifest, categories = _ingest(workdir, "voc", {})
    assert categories.names == list(VOC_CLASSES) and categories.items[15].color == (192, 128, 128)
    semantic = load_label(manifest.semantic["2007_000001"])
    instance = load_label(manifest.instance["2007_000001"])
    assert (semantic[4] == 255).all() and (instance[4] == 0).all()  # the border is ignore, in no object
    assert semantic[10, 10] == 15 and instance[10, 10] == 1 and instance[20, 25] == 2
    table = {e["id"]: e["category"] for e in manifest.instances["2007_000001"]}
    assert table == {1: 15, 2: 12}
    assert manifest.source_split.to_dict() == {"2007_000001": "train", "2007_000002": "train", "2007_000003": "val"}


def test_a_source_with_train_and_val_only_tests_on_val_and_carves_val_from_train():
    frame = pd.DataFrame({"sample_id": [f"s{i}" for i in range(30)], "source_split": ["train"] * 20 + ["val"] * 10,
                          "class_pixels": [[10, i % 3] for i in range(30)]})
    parts, how = split(frame, parse_params({"split": {"val": 0.2}}).split, seed=0)
    assert parts["test"].sample_id.tolist() == [f"s{i}" for i in range(20, 30)]
    assert len(parts["val"]) == 4 and len(parts["train"]) == 16
    assert set(parts["val"].sample_id) <= {f"s{i}" for i in range(20)}
    assert "val is the test split" in how and "val carved from train" in how


def test_object_defect_policy_and_overlap_rows(workdir):
    src = workdir / "src"
    data = _coco(src)
    data["annotations"].append({"id": 21, "image_id": 2, "category_id": 3, "segmentation": [[1, 1, 2, 2]]})
    (src / "annotations/instances.json").write_text(json.dumps(data))
    manifest, categories = _ingest(workdir, "coco", {})
    frame = manifest.reset_index()
    kept = clean(frame, categories, parse_params({}).clean, workdir / "c1", workers=1)
    overlap = kept.rejects[kept.rejects.reason == "overlap"]
    assert overlap.sample_id.tolist() == ["a"] and "1 objects of images/a.png lost 16 pixels" in overlap.detail.iloc[0]
    dropped = clean(frame, categories, parse_params({"clean": {"on_object_defect": "drop"}}).clean, workdir / "c2",
                    workers=1)
    assert "b" not in set(dropped.manifest.sample_id)
    rows = dropped.rejects
    assert rows[(rows.sample_id == "b") & (rows.action == "dropped")].reason.tolist() == ["degenerate_polygon"]
    with pytest.raises(SegpipeError, match=r"images/b.png: degenerate_polygon \(object 3 of images/b.png"):
        clean(frame, categories, parse_params({"clean": {"on_object_defect": "fail"}}).clean, workdir / "c3",
              workers=1)


# --- files that could be mispaired or overwrite each other ----------------------------------------------------

def test_coco_images_with_one_stem_in_two_folders_or_suffixes_keep_their_own_labels(workdir):
    src = workdir / "src"
    names = ["day/a.png", "night/a.png", "a.jpg", "a.png"]
    for name in names:
        _image(src / "images", name)
    data = {"images": [{"id": i, "file_name": n, "width": 40, "height": 30} for i, n in enumerate(names, 1)],
            "categories": [{"id": 1, "name": "thing"}],
            "annotations": [{"id": 10, "image_id": 2, "category_id": 1, "segmentation": SQUARE, "iscrowd": 0}]}
    (src / "annotations").mkdir(parents=True)
    (src / "annotations/instances.json").write_text(json.dumps(data))
    manifest, _ = _ingest(workdir, "coco", {})
    assert sorted(manifest.index) == ["a_jpg", "a_png", "day__a", "night__a"]
    assert len(set(manifest.sha256)) == 4  # four images, none written over another
    assert manifest.instances["night__a"][0]["area"] == 100 and list(manifest.instances["day__a"]) == []
    assert manifest.source["night__a"] == "images/night/a.png"


def test_yolo_images_sharing_a_label_file_stem_are_an_error_naming_both(workdir):
    _yolo(workdir / "src")
    _image(workdir / "src/images/train", "x.png", width=50, height=20)
    with pytest.raises(SegpipeError, match=r"images/train/x.jpg and .*images/train/x.png are two images with the "
                                           r"stem 'x'"):
        _ingest(workdir, "yolo_seg", {"images": "images/train", "data_yaml": "data.yaml"})


def test_voc_image_listed_in_two_splits_is_an_error(workdir):
    _voc(workdir / "src")
    listing = workdir / "src/ImageSets/Segmentation"
    (listing / "val.txt").write_text((listing / "val.txt").read_text() + (listing / "train.txt").read_text())
    with pytest.raises(SegpipeError, match=r"val.txt: \w+ is listed again \(first in train.txt\)"):
        _ingest(workdir, "voc", {})


def test_yolo_pixel_coordinates_are_reported_not_clipped_into_garbage(workdir):
    _yolo(workdir / "src")
    (workdir / "src/labels/train/y.txt").write_text("0 5 2 45 2 45 18 5 18\n")  # pixels of the 50x20 image
    manifest, categories = _ingest(workdir, "yolo_seg", {"images": "images/train", "data_yaml": "data.yaml"})
    entry = manifest.instances["y"][0]
    assert entry["problem"].startswith("pixel_coordinates: y.txt:1 has coordinates up to 45, but YOLO-seg "
                                       "coordinates are fractions of the image size")
    assert entry["id"] == 0 and (load_label(manifest.semantic["y"]) == 0).all()  # nothing painted
    result = clean(manifest.reset_index(), categories, parse_params({}).clean, workdir / "clean", 1)
    assert "pixel_coordinates" in set(result.rejects.reason)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e12])
def test_polygons_with_absurd_coordinates_become_rows_without_a_mask(workdir, value):
    data = _coco(workdir / "src")
    data["annotations"][0]["segmentation"] = [[5, 5, value, 5, 15, 15, 5, 15]]
    (workdir / "src/annotations/instances.json").write_text(json.dumps(data))
    manifest, _ = _ingest(workdir, "coco", {})
    entry = next(e for e in manifest.instances["a"] if e["source_category"] == 3)
    assert entry["problem"].startswith("bad_coordinates: a polygon coordinate is ") and entry["area"] == 0
