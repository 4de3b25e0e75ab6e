"""Every defect class clean knows, planted in one tiny mask-folder dataset."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from segpipe.data.canonical import CATEGORIES_FILE, MANIFEST_FILE, Categories, read_manifest
from segpipe.data.clean import clean
from segpipe.data.imageio import load_image, load_label
from segpipe.data.ingest import ingest
from segpipe.errors import SegpipeError
from segpipe.params import parse_params
from tests.conftest import REPO, mask_folder_params, save_pair, scene, write_params

EXPECTED_DROPS = {
    "bad_bytes": "corrupt_image",
    "truncated_image": "corrupt_image",
    "truncated_mask": "corrupt_mask",
    "no_mask": "missing_mask",
    "no_image": "missing_image",
    "wrong_size": "size_mismatch",
    "out_of_range": "label_out_of_range",
    "all_ignore": "all_ignore",
    "zz_duplicate": "duplicate",
}
EXPECTED_REPAIRS = {"gray": "converted", "rgba": "converted", "palette": "converted", "sixteen": "converted",
                    "exif": "exif_oriented"}


def plant_defects(src: Path) -> None:
    """Good samples plus one sample per defect class (names in EXPECTED_DROPS / EXPECTED_REPAIRS)."""
    for i in range(3):
        save_pair(src, f"good{i}", *scene(seed=i))
    image, mask = scene(seed=10)
    save_pair(src, "bad_bytes", image, mask)
    (src / "images/bad_bytes.png").write_bytes(b"this is not a png")
    save_pair(src, "truncated_image", *scene(seed=11))
    data = (src / "images/truncated_image.png").read_bytes()
    (src / "images/truncated_image.png").write_bytes(data[: len(data) // 2])
    save_pair(src, "truncated_mask", *scene(seed=12))
    data = (src / "masks/truncated_mask.png").read_bytes()
    (src / "masks/truncated_mask.png").write_bytes(data[: len(data) // 2])
    save_pair(src, "no_mask", *scene(seed=13))
    (src / "masks/no_mask.png").unlink()
    save_pair(src, "no_image", *scene(seed=14))
    (src / "images/no_image.png").unlink()
    image, mask = scene(seed=15)
    save_pair(src, "wrong_size", image, mask[:20, :30])
    image, mask = scene(seed=16)
    mask[0, 0], mask[1, 1] = 7, 42
    save_pair(src, "out_of_range", image, mask)
    image, mask = scene(seed=17)
    save_pair(src, "all_ignore", image, np.full_like(mask, 99))
    shutil.copyfile(src / "images/good0.png", src / "images/zz_duplicate.png")
    shutil.copyfile(src / "masks/good0.png", src / "masks/zz_duplicate.png")
    image, mask = scene(seed=18)
    save_pair(src, "gray", image, mask)
    Image.fromarray(image[..., 0], mode="L").save(src / "images/gray.png")
    opaque = np.full(image.shape[:2], 255, np.uint8)
    Image.fromarray(np.dstack([image, opaque]), mode="RGBA").save(src / "images/rgba.png")
    shutil.copyfile(src / "masks/gray.png", src / "masks/rgba.png")
    Image.fromarray(image).convert("P").save(src / "images/palette.png")
    shutil.copyfile(src / "masks/gray.png", src / "masks/palette.png")
    Image.fromarray(image[..., 0].astype(np.uint16) * 257).save(src / "images/sixteen.png")
    shutil.copyfile(src / "masks/gray.png", src / "masks/sixteen.png")
    plant_exif_jpeg(src)


def plant_exif_jpeg(src: Path) -> None:
    """A JPEG stored sideways with EXIF orientation 6; its mask is drawn on the upright (displayed) image.

    Upright it is 30 wide and 40 tall, with the top half red (class 1) and the bottom half black (class 0).
    """
    upright = np.zeros((40, 30, 3), np.uint8)
    upright[:20] = (255, 0, 0)
    mask = np.zeros((40, 30), np.uint8)
    mask[:20] = 1
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # orientation 6 undoes this
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(src / "images/exif.jpg", exif=exif, quality=95)
    Image.fromarray(mask, mode="L").save(src / "masks/exif.png")


@pytest.fixture
def defect_dataset(workdir):
    src = workdir / "src"
    plant_defects(src)
    params = parse_params({"base": {"workers": 2}, "ingest": mask_folder_params(src, ignore_index=99)})
    manifest = ingest(params, workdir / "data/raw")
    return manifest, Categories.load(workdir / "data/raw" / CATEGORIES_FILE)


def test_every_defect_is_reported_and_every_repair_listed(defect_dataset, workdir):
    manifest, categories = defect_dataset
    result = clean(manifest, categories, parse_params({}).clean, workdir / "data/clean", workers=2)
    dropped = result.rejects[result.rejects.action == "dropped"].set_index("sample_id").reason.to_dict()
    assert dropped == EXPECTED_DROPS
    repaired = result.rejects[result.rejects.action == "repaired"].set_index("sample_id").reason.to_dict()
    assert repaired == EXPECTED_REPAIRS
    assert sorted(result.manifest.sample_id) == sorted(["good0", "good1", "good2", *EXPECTED_REPAIRS])
    assert len(result.manifest) + len(dropped) == len(manifest)  # nothing vanished without a row
    assert result.summary["dropped_by_reason"]["corrupt_image"] == 2
    out_of_range = result.rejects.set_index("sample_id").loc["out_of_range"]
    assert "[7, 42]" in out_of_range.detail and out_of_range.file.endswith("out_of_range.png")
    assert result.rejects.fix.str.len().min() > 10


def test_exif_rotated_jpeg_is_upright_and_aligned_with_its_mask(defect_dataset):
    manifest, _ = defect_dataset
    row = manifest.set_index("sample_id").loc["exif"]
    assert (row.width, row.height) == (30, 40)
    pixels = load_image(row.image).pixels
    labels = load_label(row.semantic)
    assert pixels.shape[:2] == labels.shape == (40, 30)
    red = pixels[..., 0] > 128
    assert (red == (labels == 1)).mean() > 0.98


def test_repair_policies(defect_dataset, workdir):
    manifest, categories = defect_dataset
    policy = parse_params({"clean": {"on_size_mismatch": "resize_mask", "on_label_out_of_range": "to_ignore",
                                     "on_duplicate": "keep", "on_all_ignore": "keep"}}).clean
    result = clean(manifest, categories, policy, workdir / "data/clean", workers=1)
    kept = result.manifest.set_index("sample_id")
    assert {"wrong_size", "out_of_range", "zz_duplicate", "all_ignore"} <= set(kept.index)
    fixed = load_label(kept.loc["out_of_range"].semantic)
    assert fixed[0, 0] == 255 and fixed[1, 1] == 255
    assert load_label(kept.loc["wrong_size"].semantic).shape == (30, 40)
    assert sum(kept.loc["good0"].class_pixels) == 30 * 40


def test_fail_policy_names_the_file_and_the_fix(defect_dataset, workdir):
    manifest, categories = defect_dataset
    with pytest.raises(SegpipeError) as info:
        clean(manifest, categories, parse_params({"clean": {"on_corrupt": "fail"}}).clean, workdir / "c", workers=1)
    message = str(info.value)
    assert "bad_bytes.png" in message and "fix:" in message and "\n" not in message


def test_no_valid_sample_left_writes_the_reports_it_points_at(workdir):
    src = workdir / "src"
    for i in range(3):
        save_pair(src, f"orphan{i}", *scene(seed=i))
        (src / f"images/orphan{i}.png").unlink()
    write_params(workdir / "params.yaml", parse_params({"base": {"workers": 1}, "ingest": mask_folder_params(src)}))
    env = {"PYTHONPATH": str(REPO), "PATH": ""}
    subprocess.run([sys.executable, "-m", "stages.ingest"], cwd=workdir, env=env, check=True, capture_output=True)
    failed = subprocess.run([sys.executable, "-m", "stages.clean"], cwd=workdir, env=env, capture_output=True,
                            text=True)
    assert failed.returncode == 1
    assert "3 of 3 dropped: 3 missing_image" in failed.stderr and "reports/clean_rejects.csv" in failed.stderr
    rejects = pd.read_csv(workdir / "reports/clean_rejects.csv")
    assert sorted(rejects.sample_id) == ["orphan0", "orphan1", "orphan2"]
    assert json.loads((workdir / "reports/clean.json").read_text())["dropped_by_reason"] == {"missing_image": 3}
    assert not (workdir / "data/clean").exists()  # the data output is not half-written


def test_repair_rows_name_the_file_that_was_repaired(defect_dataset, workdir):
    manifest, categories = defect_dataset
    policy = parse_params({"clean": {"on_size_mismatch": "resize_mask"}}).clean
    rows = clean(manifest, categories, policy, workdir / "data/clean", workers=1).rejects.set_index("sample_id")
    assert rows.loc["gray"].file.endswith("images/gray.png")  # converted L to RGB: the image, not the mask
    assert rows.loc["exif"].file.endswith("images/exif.jpg")
    assert "/semantic/" in rows.loc["wrong_size"].file  # the resized mask


def test_clean_stage_reports_and_errors_without_traceback(defect_dataset, workdir):
    params = parse_params({"base": {"workers": 1}, "ingest": mask_folder_params(workdir / "src", ignore_index=99)})
    write_params(workdir / "params.yaml", params)
    env_python = [sys.executable, "-m", "stages.clean"]
    done = subprocess.run(env_python, cwd=workdir, capture_output=True, text=True, check=True,
                          env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert "kept 8 of 17" in done.stdout
    rejects = pd.read_csv(workdir / "reports/clean_rejects.csv")
    assert set(EXPECTED_DROPS) <= set(rejects.sample_id)
    assert len(read_manifest(workdir / "data/clean" / MANIFEST_FILE)) == 8
    failing = params.model_copy(update={"clean": params.clean.model_copy(update={"on_unpaired": "fail"})})
    write_params(workdir / "params.yaml", failing)
    shutil.rmtree(workdir / "data/clean")
    failed = subprocess.run(env_python, cwd=workdir, capture_output=True, text=True,
                            env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert failed.returncode == 1
    assert failed.stderr.startswith("segpipe clean: error: ") and "Traceback" not in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1
    assert not (workdir / "data/clean").exists()  # nothing half-written


def test_images_above_the_pixel_limit_are_rejected_from_their_header(workdir):
    """Ingest copies nothing of an oversized image and clean rejects what is too large, without decoding it."""
    from segpipe.data.canonical import Categories
    from segpipe.data.clean import clean
    from segpipe.data.imageio import TooLarge, load_image, oriented_size, set_pixel_limit
    from segpipe.data.ingest import ingest
    from segpipe.params import parse_params
    from tests.conftest import mask_folder_params, save_pair, scene

    src = workdir / "src"
    for i in range(3):
        save_pair(src, f"s{i}", *scene(width=40, height=30, seed=i))
    save_pair(src, "big", *scene(width=80, height=60, seed=9))
    params = parse_params({"base": {"workers": 1}, "ingest": mask_folder_params(src), "clean": {"max_pixels": 2000}})
    manifest = ingest(params, workdir / "data/raw").set_index("sample_id")
    assert manifest.issue["big"].startswith("too_large: ") and "80x60 is 4,800 pixels" in manifest.issue["big"]
    assert manifest.image["big"] == "" and not list((workdir / "data/raw/images").glob("big*"))
    result = clean(manifest.reset_index(), Categories.load(workdir / "data/raw/categories.json"), params.clean,
                   workdir / "clean", 1)
    row = result.rejects.set_index("sample_id").loc["big"]
    assert row.reason == "too_large" and "clean.max_pixels" in row.fix and len(result.manifest) == 3
    # a decompression bomb: a tiny file whose header claims a huge image is refused before decoding
    bomb = workdir / "bomb.png"
    bomb.write_bytes(png_header(30000, 30000))  # 60 bytes that claim 900 megapixels
    set_pixel_limit(None)  # the machine's limit, at most Pillow's own
    with pytest.raises(TooLarge, match="30000x30000 is 900,000,000 pixels, more than the limit"):
        oriented_size(bomb)
    with pytest.raises(TooLarge):
        load_image(bomb)


def png_header(width: int, height: int) -> bytes:
    """The start of a PNG file that claims ``width`` x ``height`` grey pixels (no image data follows)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + chunk(
        b"IDAT", zlib.compress(b"\x00" * 16))
