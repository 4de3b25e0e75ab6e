import hashlib
import http.server
import io
import tarfile
import threading
import zipfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segpipe.data.imageio import load_label
from segpipe.data.ingest import ingest
from segpipe.errors import SegpipeError
from segpipe.params import parse_params
from tests.conftest import mask_folder_params, save_pair, scene


def _ingest(workdir: Path, source: Path | str, **options):
    ingest_section = mask_folder_params(source, **options.pop("mask_folder", {}))
    ingest_section.update(options)
    params = parse_params({"base": {"workers": 1}, "ingest": ingest_section})
    return ingest(params, workdir / "data/raw")


def test_index_masks_with_label_map_and_ignore(workdir):
    src = workdir / "src"
    image, mask = scene()
    mask[0, :5] = 9  # source "void"
    mask[1, :5] = 7  # source value remapped to class 1
    save_pair(src, "a", image, mask)
    manifest = _ingest(workdir, src, mask_folder={"ignore_index": 9, "label_map": {7: 1}})
    labels = load_label(manifest.semantic[0])
    assert (labels[0, :5] == 255).all() and (labels[1, :5] == 1).all()
    assert np.array_equal(labels[2:], mask[2:])
    assert manifest.source_split[0] == "" and manifest.width[0] == 40 and manifest.height[0] == 30


def test_predefined_split_folders_and_mask_suffix(workdir):
    src = workdir / "src"
    for split, count in (("train", 3), ("val", 2), ("test", 1)):
        for i in range(count):
            image, mask = scene(seed=i)
            image_path, mask_path = save_pair(src, f"{split}{i}", image, mask, split, f"{split}annot")
            mask_path.rename(mask_path.with_name(f"{split}{i}_L.png"))
    splits = {s: {"images": s, "masks": f"{s}annot"} for s in ("train", "val", "test")}
    manifest = _ingest(workdir, src, mask_folder={"splits": splits, "mask_suffix": "_L"})
    assert manifest.source_split.value_counts().to_dict() == {"train": 3, "val": 2, "test": 1}
    assert (manifest.issue == "").all()


def test_colour_masks_map_through_class_colours(workdir):
    src = workdir / "src"
    image, mask = scene()
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0]], dtype=np.uint8)
    rgb = colours[mask]
    rgb[0, 0] = (1, 2, 3)  # a colour that is no class
    save_pair(src, "a", image, mask)
    Image.fromarray(rgb).save(src / "masks" / "a.png")
    manifest = _ingest(workdir, src, mask_folder={"mask_encoding": "color"})
    labels = load_label(manifest.semantic[0])
    assert labels[0, 0] == 255
    assert np.array_equal(labels.ravel()[1:], mask.ravel()[1:])
    assert manifest.issue[0].startswith("unknown_color") and "[1, 2, 3]" in manifest.issue[0]


def _colour_dataset(src: Path) -> np.ndarray:
    """One colour mask with VOC's border colour (224, 224, 192) around a box of an unknown colour (9, 9, 9)."""
    image, mask = scene()
    rgb = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0]], dtype=np.uint8)[mask]
    rgb[0, :] = (224, 224, 192)
    save_pair(src, "a", image, mask)
    Image.fromarray(rgb).save(src / "masks" / "a.png")
    return mask


def test_colour_masks_declare_ignore_colours(workdir):
    src = workdir / "src"
    mask = _colour_dataset(src)
    manifest = _ingest(workdir, src, mask_folder={"mask_encoding": "color", "ignore_colors": [[224, 224, 192]]})
    labels = load_label(manifest.semantic[0])
    assert (labels[0] == 255).all() and np.array_equal(labels[1:], mask[1:])
    assert manifest.issue[0] == ""  # the border is declared ignore: nothing to report


@pytest.mark.parametrize("action", ["drop", "to_ignore"])
def test_unknown_colour_rows_say_what_was_done_and_the_colour_fix(workdir, action):
    from segpipe.data.canonical import Categories
    from segpipe.data.clean import clean

    src = workdir / "src"
    _colour_dataset(src)
    manifest = _ingest(workdir, src, mask_folder={"mask_encoding": "color"})
    policy = parse_params({"clean": {"on_label_out_of_range": action}}).clean
    categories = Categories.load(workdir / "data/raw/categories.json")
    row = clean(manifest, categories, policy, workdir / "data/clean", workers=1).rejects.iloc[0]
    assert row.reason == "unknown_color" and "[224, 224, 192]" in row.detail
    assert row.action == ("dropped" if action == "drop" else "repaired")
    assert ("set to ignore" in row.detail) == (action == "to_ignore")
    assert "ignore_colors" in row.fix and "label_map" not in row.fix


def _dataset_bytes(src: Path) -> dict[str, bytes]:
    image, mask = scene()
    save_pair(src, "a", image, mask)
    return {str(p.relative_to(src.parent)): p.read_bytes() for p in src.rglob("*.png")}


def test_zip_and_tar_archives_are_extracted(workdir):
    files = _dataset_bytes(workdir / "ds")
    with zipfile.ZipFile(workdir / "ds.zip", "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    with tarfile.open(workdir / "ds.tar.gz", "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    for archive in ("ds.zip", "ds.tar.gz"):
        manifest = _ingest(workdir, workdir / archive)
        assert len(manifest) == 1 and manifest.issue[0] == ""


def test_archives_that_escape_or_link_are_refused(workdir):
    with zipfile.ZipFile(workdir / "evil.zip", "w") as zf:
        zf.writestr("../outside.png", b"x")
    with pytest.raises(SegpipeError, match="outside the target folder"):
        _ingest(workdir, workdir / "evil.zip")
    with tarfile.open(workdir / "link.tar", "w") as tf:
        info = tarfile.TarInfo("images/a.png")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(SegpipeError, match="link"):
        _ingest(workdir, workdir / "link.tar")
    assert not (workdir.parent / "outside.png").exists()


@pytest.fixture
def http_root(workdir):
    """A real HTTP server on loopback serving ``workdir/served``."""
    served = workdir / "served"
    served.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_url_source_downloads_only_when_asked_and_checks_sha256(workdir, http_root):
    served, base = http_root
    files = _dataset_bytes(workdir / "ds")
    with zipfile.ZipFile(served / "ds.zip", "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    digest = hashlib.sha256((served / "ds.zip").read_bytes()).hexdigest()
    url = f"{base}/ds.zip"
    with pytest.raises(SegpipeError, match="set ingest.download: true"):
        _ingest(workdir, url)
    with pytest.raises(SegpipeError, match="sha256 does not match"):
        _ingest(workdir, url, download=True, sha256="0" * 64)
    manifest = _ingest(workdir, url, download=True, sha256=digest)
    assert len(manifest) == 1
    with pytest.raises(SegpipeError, match="download of .* failed"):
        _ingest(workdir, f"{base}/missing.zip", download=True)


def test_missing_source_is_a_clear_error(workdir):
    with pytest.raises(SegpipeError, match="does not exist"):
        _ingest(workdir, workdir / "nowhere")
    (workdir / "empty" / "images").mkdir(parents=True)
    (workdir / "empty" / "masks").mkdir()
    with pytest.raises(SegpipeError, match="no images or masks found"):
        _ingest(workdir, workdir / "empty")


def test_another_spelling_of_the_source_gives_the_same_manifest(workdir):
    from segpipe.data.imageio import sha256_file

    src = workdir / "src"
    for i in range(3):
        save_pair(src, f"s{i}", *scene(seed=i))
    (src / "masks/s0.png").write_bytes(b"broken")  # issue texts name files too
    _ingest(workdir, str(src.resolve()))
    absolute = sha256_file(workdir / "data/raw/manifest.parquet")
    _ingest(workdir, "./src/../src")
    assert sha256_file(workdir / "data/raw/manifest.parquet") == absolute
    manifest = _ingest(workdir, "src")
    assert sorted(manifest.source) == ["images/s0.png", "images/s1.png", "images/s2.png"]
    assert manifest.set_index("sample_id").issue["s0"].startswith("corrupt_mask: masks/s0.png: cannot be decoded")


def test_two_images_or_masks_with_one_stem_are_an_error_naming_both(workdir):
    src = workdir / "src"
    image, mask = scene()
    save_pair(src, "a", image, mask)
    Image.fromarray(image).save(src / "images/a.jpg")  # which image does masks/a.png label?
    with pytest.raises(SegpipeError, match=r"images/a.jpg and .*images/a.png are two images with the stem 'a'"):
        _ingest(workdir, src)
    (src / "images/a.jpg").unlink()
    Image.fromarray(mask, mode="L").save(src / "masks/a_L.png")  # with mask_suffix _L, a.png and a_L.png collide
    with pytest.raises(SegpipeError, match=r"masks/a.png and .*masks/a_L.png are two masks with the stem 'a'"):
        _ingest(workdir, src, mask_folder={"mask_suffix": "_L"})


def test_archives_past_the_member_or_size_limit_are_refused_before_extracting(workdir):
    src = workdir / "src"
    for i in range(3):
        save_pair(src, f"s{i}", *scene(seed=i))
    archive = workdir / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(src.rglob("*.png")):
            zf.write(path, path.relative_to(src))
    with pytest.raises(SegpipeError, match=r"data.zip: 6 members, more than ingest.limits.archive_members \(5\)"):
        _ingest(workdir, archive, limits={"archive_members": 5})
    with pytest.raises(SegpipeError, match=r"data.zip: extracts to [\d,]+ bytes, more than "
                                           r"ingest.limits.archive_bytes \(100\)"):
        _ingest(workdir, archive, limits={"archive_bytes": 100})
    assert len(_ingest(workdir, archive)) == 3


def test_downloads_are_kept_by_their_whole_url_and_stopped_past_the_size_limit(workdir, http_root):
    from segpipe.data.sources import download, download_path

    root, url = http_root
    for folder in ("a", "b"):
        (root / folder).mkdir()
        (root / folder / "data.zip").write_bytes(folder.encode() * 1000)
    first, second = (download(f"{url}/{folder}/data.zip", None, True) for folder in ("a", "b"))
    assert first != second and first.read_bytes() != second.read_bytes()  # one name, two URLs, two downloads
    assert first == download_path(f"{url}/a/data.zip")
    (root / "big.zip").write_bytes(b"x" * 5000)
    with pytest.raises(SegpipeError, match=r"is 5,000 bytes, more than ingest.limits.download_bytes \(1,000\)"):
        download(f"{url}/big.zip", None, True, max_bytes=1000)
    assert not download_path(f"{url}/big.zip").exists()
