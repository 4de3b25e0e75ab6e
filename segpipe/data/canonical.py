"""The canonical dataset that ingest writes and every later stage reads: images, label maps, the manifest and the
class list."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from segpipe.data.imageio import DecodeError, TooLarge, oriented_size, sha256_file
from segpipe.errors import SegpipeError
from segpipe.fsutil import write_atomic, write_json

IMAGES_DIR = "images"
SEMANTIC_DIR = "semantic"
INSTANCE_DIR = "instance"
CATEGORIES_FILE = "categories.json"
MANIFEST_FILE = "manifest.parquet"
PATH_COLUMNS = ("image", "semantic", "instance")
MANIFEST_COLUMNS = (
    "sample_id", "image", "semantic", "instance", "width", "height", "sha256", "source_split", "source", "issue",
    "source_values", "instances",
)


@dataclass(frozen=True)
class Category:
    id: int
    name: str
    color: tuple[int, int, int]
    isthing: bool
    source_id: int | None = None  # the id the source dataset gave it (COCO category ids are not contiguous)


@dataclass(frozen=True)
class Categories:
    """The class list of a dataset plus the label value that means 'ignore'."""

    items: tuple[Category, ...]
    ignore_index: int

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.items]

    @property
    def ids(self) -> list[int]:
        return [c.id for c in self.items]

    @property
    def num_classes(self) -> int:
        return len(self.items)

    @staticmethod
    def ignore_for(num_classes: int) -> int:
        """255 for 8-bit label maps, 65535 when more than 254 classes need 16 bits."""
        return 255 if num_classes <= 254 else 65535

    def to_json(self) -> dict:
        return {"categories": [asdict(c) for c in self.items], "ignore_index": self.ignore_index}

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> Categories:
        path = Path(path)
        if not path.is_file():
            raise SegpipeError(f"{path}: not found; run the ingest stage first (dvc repro ingest)")
        return cls.load_json(json.loads(path.read_text()))

    @classmethod
    def load_json(cls, data: dict) -> Categories:
        items = tuple(
            Category(int(c["id"]), str(c["name"]), tuple(c["color"]), bool(c["isthing"]), c.get("source_id"))
            for c in data["categories"]
        )
        return cls(items, int(data["ignore_index"]))


def new_row(sample_id: str, source_split: str, source: str) -> dict:
    """A manifest row with nothing written yet; readers fill in what they write (and an issue, if any)."""
    row = dict.fromkeys(MANIFEST_COLUMNS, "")
    row.update({"sample_id": sample_id, "source_split": source_split, "source": source, "width": 0, "height": 0,
                "source_values": [], "instances": []})
    return row


def copy_image(source: Path, out_dir: Path, row: dict) -> bool:
    """Copy an image into ``out_dir/images`` and record it (path, sha256, size after EXIF orientation) in ``row``;
    False when its header cannot be read (clean decodes every image fully and reports it) or it has more pixels
    than the limit (then it is not copied, and ``row`` says so: nothing of it is decoded)."""
    try:
        size = oriented_size(source)
    except TooLarge as exc:
        row["issue"] = f"too_large: {exc}"
        return False
    except DecodeError:
        size = None
    target = out_dir / IMAGES_DIR / f"{row['sample_id']}{source.suffix.lower()}"
    shutil.copyfile(source, target)
    row["image"], row["sha256"] = str(target), sha256_file(target)
    if size is None:
        return False
    row["width"], row["height"] = size
    return True


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest; path columns come back absolute (they are stored relative to the manifest)."""
    path = Path(path)
    if not path.is_file():
        raise SegpipeError(f"{path}: not found; run the stage that writes it first (dvc repro)")
    frame = pd.read_parquet(path)
    root = path.parent.resolve()
    for column in PATH_COLUMNS:
        if column in frame:
            frame[column] = [str((root / p).resolve()) if p else "" for p in frame[column].fillna("")]
    return frame


def write_manifest(frame: pd.DataFrame, path: str | Path) -> None:
    """Write a manifest atomically, storing path columns relative to the manifest's folder."""
    path = Path(path)
    root = path.parent.resolve()
    out = frame.copy()
    for column in PATH_COLUMNS:
        if column in out:
            out[column] = [_relative(p, root) for p in out[column].fillna("")]
    write_atomic(path, lambda tmp: out.to_parquet(tmp, index=False))


def _relative(value: str, root: Path) -> str:
    if not value:
        return ""
    return Path(os.path.relpath(Path(value).resolve(), root)).as_posix()
